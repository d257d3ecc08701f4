//! [`SaltObjective`]: a student language model trained with a teacher's soft labels while the [`KdSchedule`]
//! weight is above zero, and on the data alone after, as an [`Objective`] for the shared trainer.

use std::collections::BTreeMap;
use std::time::Instant;

use data::batch::{BatcherState, LmBatcher};
use tensor::{Params, Rng, Tensor, no_grad};
use train::Objective;
use train::lm::LmObjective;
use transformer::{Decoder, flops};

use crate::distill::{DistillConfig, KdSchedule, mixed_loss};
use crate::{Error, Result};

/// A student [`LmObjective`] with a teacher. The teacher runs (under `no_grad`) only on steps whose weight is
/// above zero, on the same batch as the student; its forward FLOPs are part of [`Objective::flops_per_step`],
/// so the trainer's compute axis includes them, and its time is part of the step's time. With a selection
/// batcher (SALT_DS), distillation steps draw their batches from the selected windows and the other steps from
/// the student's own batcher.
#[derive(Debug)]
pub struct SaltObjective {
    pub student: LmObjective,
    pub teacher: Decoder<f32>,
    pub distill: DistillConfig,
    /// Batches for the distillation steps (SALT_DS); `None`: the student's batcher throughout.
    pub selected: Option<LmBatcher>,
    last_step_flops: u64,
    teacher_flops: u64,
    teacher_seconds: f64,
}

impl SaltObjective {
    /// The teacher must share the student's vocabulary (same tokenizer) and see at least its context.
    pub fn new(student: LmObjective, teacher: Decoder<f32>, distill: DistillConfig) -> Result<Self> {
        distill.validate()?;
        let (s, t) = (&student.model.config, &teacher.config);
        if s.vocab_size != t.vocab_size || t.context < student.train.context() {
            return Err(Error::Config(format!(
                "teacher (vocabulary {}, context {}) does not fit the student (vocabulary {}, windows of {})",
                t.vocab_size,
                t.context,
                s.vocab_size,
                student.train.context()
            )));
        }
        Ok(SaltObjective {
            student,
            teacher,
            distill,
            selected: None,
            last_step_flops: 0,
            teacher_flops: 0,
            teacher_seconds: 0.0,
        })
    }

    /// Draws distillation-phase batches from `batcher` (same context and batch size as the student's).
    pub fn with_selection(mut self, batcher: LmBatcher) -> Result<Self> {
        if batcher.context() != self.student.train.context() || batcher.batch_size() != self.student.train.batch_size()
        {
            return Err(Error::Config("the selection batcher's context and batch must be the student's".into()));
        }
        self.selected = Some(batcher);
        Ok(self)
    }

    pub fn schedule(&self) -> KdSchedule {
        self.distill.schedule
    }

    /// Matrix-product FLOPs of the teacher's forward passes so far in this process (also inside the trainer's
    /// count).
    pub fn teacher_flops(&self) -> u64 {
        self.teacher_flops
    }

    /// Seconds of the teacher's forward passes so far in this process (also inside the steps' time).
    pub fn teacher_seconds(&self) -> f64 {
        self.teacher_seconds
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct DataState {
    train: serde_json::Value,
    selected: Option<BatcherState>,
}

impl Objective for SaltObjective {
    fn params(&self) -> &Params<f32> {
        self.student.params()
    }

    fn train_loss(&mut self, step: u64, rng: &mut Rng) -> Result<Tensor<f32>, train::Error> {
        let weight = self.distill.schedule.weight(step);
        if weight == 0.0 {
            // Exactly the plain language-model step: same batch stream, same random stream.
            let loss = self.student.train_loss(step, rng)?;
            self.last_step_flops = self.student.flops_per_step();
            return Ok(loss);
        }
        let b = self.selected.as_mut().unwrap_or(&mut self.student.train).next_batch();
        let model = &self.student.model;
        let path = self.student.training_path();
        let vocab = model.config.vocab_size;
        let rows = b.batch * b.context;
        let logits = model.forward_path(&b.inputs, b.batch, b.context, &path, Some(rng))?.reshape(&[rows, vocab]);
        let started = Instant::now();
        let teacher_logits = no_grad(|| self.teacher.forward(&b.inputs, b.batch, b.context))?.reshape(&[rows, vocab]);
        self.teacher_seconds += started.elapsed().as_secs_f64();
        let teacher_flops = flops::decoder_forward(&self.teacher.config, b.batch, b.context, self.teacher.n_layers());
        self.teacher_flops += teacher_flops;
        self.last_step_flops =
            flops::decoder_step(&model.config, b.batch, b.context, path.len()).total() + teacher_flops;
        Ok(mixed_loss(&logits, &b.targets, &teacher_logits, weight, self.distill.temperature))
    }

    fn evaluate(&mut self) -> Result<BTreeMap<String, f64>, train::Error> {
        self.student.evaluate()
    }

    fn tokens_per_step(&self) -> u64 {
        self.student.tokens_per_step()
    }

    /// The student's forward and backward FLOPs plus, on distillation steps, the teacher's forward FLOPs.
    fn flops_per_step(&self) -> u64 {
        self.last_step_flops
    }

    fn data_state(&self) -> serde_json::Value {
        let state = DataState { train: self.student.data_state(), selected: self.selected.as_ref().map(|b| b.state()) };
        serde_json::to_value(state).expect("json")
    }

    fn restore_data_state(&mut self, state: &serde_json::Value) -> Result<(), train::Error> {
        let s: DataState = serde_json::from_value(state.clone())
            .map_err(|e| train::Error::Other(format!("SALT data state in checkpoint: {e}")))?;
        self.student.restore_data_state(&s.train)?;
        match (&mut self.selected, s.selected) {
            (Some(b), Some(st)) => Ok(b.restore(st)?),
            (None, None) => Ok(()),
            _ => Err(train::Error::Other(
                "the checkpoint and this run disagree on whether distillation batches come from a selection".into(),
            )),
        }
    }
}
