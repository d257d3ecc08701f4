//! `cargo xtask bench --compare`: Strata's reference workloads measured side by side with their JAX and PyTorch
//! anchors and numpy's sgemm, interleaved over rounds, in fresh processes; medians, ratios and the issue-19 goals,
//! with the machine they ran on. Writes `target/bench-compare/report.md` and `samples.tsv`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::{Result, cargo, number_after, root, run, string_after};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum System {
    Strata,
    Jax,
    Torch,
    Numpy,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Strata => "Strata",
            System::Jax => "JAX (jit)",
            System::Torch => "PyTorch eager",
            System::Numpy => "numpy (OpenBLAS)",
        }
    }
}

/// One process to run: its output gives the times (ms) of one or more table rows.
struct Probe {
    system: System,
    command: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
    /// (row, line prefix) for anchors; for Strata the row alone (the tool prints one JSON line).
    rows: Vec<(&'static str, &'static str)>,
}

/// Rows of the table, in order, with the per-call unit used for throughput.
const ROWS: [(&str, &str); 9] = [
    ("sgemm 2048^3", "GEMM"),
    ("W2 LM train step (4x256, B16 x T128, AdamW)", "step"),
    ("W2 LM forward (loss, no grad)", "forward"),
    ("nanoGPT CPU shapes train step (4x128, B12 x T64, trainer)", "step"),
    ("W3 CNN train step (B128, SGD)", "step"),
    ("W3 CNN input gradient (B128)", "batch"),
    ("W1 ICL looped step (d10 n40 L8 B256, Adam)", "step"),
    ("W1 ICL distinct-layer step", "step"),
    ("MiniLM fine-tuning step (B32 x T64, AdamW, all trainable)", "step"),
];

/// The Strata workloads `bench_workload` runs, in the order of [`ROWS`].
const WORKLOADS: [&str; 9] = [
    "gemm-2048",
    "w2-train",
    "w2-forward",
    "nanogpt-train",
    "cnn-train",
    "cnn-saliency",
    "icl-looped",
    "icl-distinct",
    "minilm-train",
];

struct Options {
    rounds: usize,
    torch: bool,
    /// Workload names (or parts of them) to run; empty: all. The sgemm row always runs (the % column needs it).
    only: Vec<String>,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut o = Options { rounds: 3, torch: true, only: vec![] };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--compare" => {}
            "--rounds" => {
                o.rounds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&r: &usize| r > 0)
                    .ok_or("--rounds needs a positive integer")?
            }
            "--no-torch" => o.torch = false,
            "--only" => {
                o.only = it
                    .next()
                    .map(|v| v.split(',').filter(|w| !w.is_empty()).map(str::to_string).collect())
                    .filter(|w: &Vec<String>| !w.is_empty())
                    .ok_or(format!("--only needs workload names, e.g. cnn,w2 (of: {})", WORKLOADS.join(", ")))?;
                if let Some(bad) = o.only.iter().find(|w| !WORKLOADS.iter().any(|name| name.contains(w.as_str()))) {
                    return Err(format!("--only: no workload matches {bad:?} (workloads: {})", WORKLOADS.join(", ")));
                }
            }
            other => {
                return Err(format!("bench --compare: unknown option {other:?} (--rounds N, --no-torch, --only a,b)"));
            }
        }
    }
    Ok(o)
}

pub fn compare(args: &[String]) -> Result {
    let opts = parse_options(args)?;
    let anchors = crate::anchors_dir()?;
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    crate::ensure_anchor_packages(&py)?;
    let has_torch = opts.torch && python_has(&py, "torch");
    if opts.torch && !has_torch {
        eprintln!(
            "bench --compare: torch is not installed (`pip install torch`, about 5 GB): PyTorch columns are skipped"
        );
    }
    let mut build = cargo();
    build.args(["build", "--release", "-p", "strata-benches", "--example", "bench_workload"]);
    run(build)?;
    let tool = root().join("target").join("release").join("examples").join("bench_workload");

    let machine = machine_description(&py);
    println!("{machine}");
    let check_before = cpu_check(&anchors);
    println!("{check_before}");

    let mut groups = probe_groups(&tool, &anchors, &root().join("benches").join("anchors"), &py, has_torch);
    if !opts.only.is_empty() {
        let wanted = |p: &Probe| {
            p.system == System::Strata
                && (p.command[1] == WORKLOADS[0] || opts.only.iter().any(|w| p.command[1].contains(w.as_str())))
        };
        groups.retain(|g| g.iter().any(wanted));
    }
    let mut samples: BTreeMap<(&str, System), Vec<f64>> = BTreeMap::new();
    let mut extra: BTreeMap<&str, String> = BTreeMap::new();
    for round in 0..opts.rounds {
        eprintln!("== round {} of {}", round + 1, opts.rounds);
        for group in &groups {
            // Alternate who goes first, so slow drifts of the machine do not favour one side.
            let order: Vec<&Probe> = if round % 2 == 0 { group.iter().collect() } else { group.iter().rev().collect() };
            for probe in order {
                let out = run_probe(probe, &anchors)?;
                for &(row, prefix) in &probe.rows {
                    let ms = if probe.system == System::Strata {
                        if let Some(g) = number_after(&out, "\"matmul_gflop\"", ":") {
                            extra.insert(row, format!("{g}"));
                        }
                        number_after(&out, "\"ms\"", ":")
                    } else {
                        anchor_ms(&out, prefix)
                    }
                    .ok_or_else(|| format!("no time for {row:?} in the output of {:?}:\n{out}", probe.command))?;
                    eprintln!("   {:<16} {row:<60} {ms:>10.2} ms", probe.system.name());
                    samples.entry((row, probe.system)).or_default().push(ms);
                }
                if let (System::Strata, Some(core)) = (probe.system, string_after(&out, "\"openblas_core\":")) {
                    extra.insert("openblas_core", core);
                }
            }
        }
    }
    let check_after = cpu_check(&anchors);
    println!("{check_after}");

    let report = render(&machine, &check_before, &check_after, &samples, &extra, opts.rounds, has_torch);
    let dir = root().join("target").join("bench-compare");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join("report.md"), &report).map_err(|e| format!("report.md: {e}"))?;
    let mut tsv = String::from("row\tsystem\tround\tms\n");
    for ((row, sys), v) in &samples {
        for (i, ms) in v.iter().enumerate() {
            tsv += &format!("{row}\t{}\t{}\t{ms}\n", sys.name(), i + 1);
        }
    }
    std::fs::write(dir.join("samples.tsv"), tsv).map_err(|e| format!("samples.tsv: {e}"))?;
    println!("\n{report}");
    println!("(written to {})", dir.join("report.md").display());
    Ok(())
}

fn probe_groups(tool: &Path, anchors: &Path, ours: &Path, py: &str, torch: bool) -> Vec<Vec<Probe>> {
    // Workload `i` of `bench_workload` fills row `i` of the table.
    let strata = |i: usize| Probe {
        system: System::Strata,
        command: vec![tool.display().to_string(), WORKLOADS[i].into()],
        env: vec![],
        rows: vec![(ROWS[i].0, "")],
    };
    let script = |system, dir: &Path, name: &str, args: &[&str], rows: Vec<(&'static str, &'static str)>| {
        let mut command = vec![py.to_string(), dir.join(name).display().to_string()];
        command.extend(args.iter().map(|s| s.to_string()));
        Probe { system, command, env: vec![], rows }
    };
    let nanogpt = ["--vocab", "65", "--d", "128", "--heads", "4", "--layers", "4", "--ctx", "64", "--batch", "12"];
    let mut groups = vec![
        vec![strata(0), {
            let mut p = script(System::Numpy, anchors, "gemm_numpy.py", &[], vec![(ROWS[0].0, "numpy sgemm n=2048:")]);
            p.env.push(("OPENBLAS_NUM_THREADS", "2"));
            p
        }],
        vec![
            strata(1),
            strata(2),
            script(
                System::Jax,
                anchors,
                "jax_lm.py",
                &[],
                vec![(ROWS[1].0, "W2 LM train"), (ROWS[2].0, "W2 LM forward")],
            ),
        ],
        vec![strata(3), {
            let mut args: Vec<&str> = nanogpt.to_vec();
            args.extend(["--tied", "--no-bias"]);
            script(System::Jax, ours, "jax_lm_shapes.py", &args, vec![(ROWS[3].0, "JAX LM train:")])
        }],
        vec![
            strata(4),
            strata(5),
            script(
                System::Jax,
                anchors,
                "jax_cnn.py",
                &[],
                vec![(ROWS[4].0, "W3 CNN train step:"), (ROWS[5].0, "W3 CNN saliency")],
            ),
        ],
        vec![
            strata(6),
            strata(7),
            script(
                System::Jax,
                anchors,
                "jax_icl.py",
                &[],
                vec![(ROWS[6].0, "W1 ICL L=8 shared (looped)"), (ROWS[7].0, "W1 ICL L=8 distinct layers")],
            ),
        ],
        vec![strata(8)],
    ];
    if torch {
        groups[1].push(script(
            System::Torch,
            anchors,
            "torch_gpt.py",
            &["--bias"],
            vec![(ROWS[1].0, "torch GPT train"), (ROWS[2].0, "torch GPT forward")],
        ));
        let mut args: Vec<&str> = nanogpt.to_vec();
        args.push("--tied");
        groups[2].push(script(System::Torch, anchors, "torch_gpt.py", &args, vec![(ROWS[3].0, "torch GPT train")]));
        groups[5].push(script(System::Torch, ours, "torch_minilm.py", &[], vec![(ROWS[8].0, "torch MiniLM train:")]));
    }
    groups
}

fn run_probe(p: &Probe, anchors: &Path) -> Result<String> {
    let mut c = Command::new(&p.command[0]);
    c.args(&p.command[1..]);
    if p.system != System::Strata {
        // Anchor scripts import `common.py` from their own folder (ours find it through STRATA_ANCHORS).
        if let Some(dir) = Path::new(&p.command[1]).parent() {
            c.current_dir(dir);
        }
    }
    c.env("STRATA_ANCHORS", anchors);
    for (k, v) in &p.env {
        c.env(k, v);
    }
    let out = c.output().map_err(|e| format!("could not start {:?}: {e}", p.command))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}):\n{text}\n{}",
            p.command,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(text)
}

/// The time in an anchor's line `<prefix> ... (12.3 ms/step, ...)` or `(12.3 ms)`.
fn anchor_ms(out: &str, prefix: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.starts_with(prefix))?;
    let open = line.rfind('(')?;
    let rest = &line[open + 1..];
    let end = rest.find(" ms")?;
    rest[..end].trim().parse().ok()
}

fn python_has(py: &str, module: &str) -> bool {
    Command::new(py).args(["-c", &format!("import {module}")]).output().is_ok_and(|o| o.status.success())
}

fn machine_description(py: &str) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let flags = field("flags");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let isa = if has("avx512f") {
        "AVX-512"
    } else if has("avx2") {
        "AVX2"
    } else {
        "no AVX2"
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let coretype = std::env::var("OPENBLAS_CORETYPE").unwrap_or_else(|_| "unset".into());
    let versions = Command::new(py)
        .args([
            "-c",
            "import numpy, jax\ntry:\n import torch; t=torch.__version__\nexcept Exception: t='-'\nprint(f'numpy {numpy.__version__}, jax {jax.__version__}, torch {t}')",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "Machine: {} | {isa} | {cores} cores | Linux {kernel} | OPENBLAS_CORETYPE {coretype} | {versions}",
        field("model name")
    )
}

fn cpu_check(anchors: &Path) -> String {
    let out = Command::new("bash").arg(anchors.join("cpu_check.sh")).output();
    match out {
        Ok(o) => format!("cpu_check: {}", String::from_utf8_lossy(&o.stdout).trim().replace('\n', "; ")),
        Err(e) => format!("cpu_check: could not run ({e})"),
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { 0.5 * (s[n / 2 - 1] + s[n / 2]) }
}

fn render(
    machine: &str,
    before: &str,
    after: &str,
    samples: &BTreeMap<(&str, System), Vec<f64>>,
    extra: &BTreeMap<&str, String>,
    rounds: usize,
    torch: bool,
) -> String {
    let med = |row: &str, sys: System| samples.get(&(row, sys)).map(|v| median(v));
    let range = |row: &str, sys: System| {
        samples.get(&(row, sys)).map(|v| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            format!("{:.1} ({lo:.1}-{hi:.1})", median(v))
        })
    };
    let dash = || "-".to_string();
    let mut s = format!(
        "{machine}\nStrata's OpenBLAS kernels: {}; {rounds} rounds, each workload in a fresh process, interleaved with \
         its anchors (order alternating by round); milliseconds per call, median (min-max over rounds).\n{before}\n{after}\n\n",
        extra.get("openblas_core").map(String::as_str).unwrap_or("?")
    );
    s += "| workload | Strata ms | JAX ms | PyTorch ms | JAX / Strata | PyTorch / Strata | Strata GFLOP/s (% of numpy sgemm) |\n";
    s += "|---|---|---|---|---|---|---|\n";
    let sgemm_gflops = med(ROWS[0].0, System::Numpy).map(|ms| 2.0 * 2048f64.powi(3) / (ms * 1e-3) / 1e9);
    for (row, _) in ROWS {
        let strata = med(row, System::Strata);
        let ratio = |sys| match (med(row, sys), strata) {
            (Some(a), Some(b)) => format!("{:.2}x", a / b),
            _ => dash(),
        };
        let anchor_col =
            |sys| if row == ROWS[0].0 && sys == System::Jax { range(row, System::Numpy) } else { range(row, sys) };
        let gflops = match (strata, extra.get(row).and_then(|g| g.parse::<f64>().ok())) {
            (Some(ms), Some(g)) if g > 0.01 => {
                let rate = g / (ms * 1e-3);
                match sgemm_gflops {
                    Some(peak) => format!("{rate:.0} ({:.0}%)", 100.0 * rate / peak),
                    None => format!("{rate:.0}"),
                }
            }
            _ => dash(),
        };
        let jax_ratio = if row == ROWS[0].0 { ratio(System::Numpy) } else { ratio(System::Jax) };
        s += &format!(
            "| {row} | {} | {} | {} | {jax_ratio} | {} | {gflops} |\n",
            range(row, System::Strata).unwrap_or_else(dash),
            anchor_col(System::Jax).unwrap_or_else(dash),
            if torch { range(row, System::Torch).unwrap_or_else(dash) } else { "not installed".into() },
            ratio(System::Torch),
        );
    }
    s += "\n(first row: the JAX column is numpy's sgemm at 2048^3 with 2 OpenBLAS threads; Strata's is its own \
          `matmul` at the same shape.)\n\nIssue-19 goals (ratio = anchor time / Strata time):\n\n| goal | measured | met |\n|---|---|---|\n";
    let ratio = |row: &str, sys| Some(med(row, sys)? / med(row, System::Strata)?);
    let mut goal = |name: &str, value: Option<f64>, target: f64, unit: &str| {
        let (measured, met) = match value {
            Some(v) => (format!("{v:.2}{unit}"), if v >= target { "yes" } else { "no" }),
            None => ("-".to_string(), "not measured"),
        };
        s += &format!("| {name} | {measured} | {met} |\n");
    };
    goal("W2 train >= 1.5x JAX", ratio(ROWS[1].0, System::Jax), 1.5, "x");
    goal("W2 train >= 1.5x PyTorch", ratio(ROWS[1].0, System::Torch), 1.5, "x");
    let w2_share = (|| {
        let g: f64 = extra.get(ROWS[1].0)?.parse().ok()?;
        Some(100.0 * g / (med(ROWS[1].0, System::Strata)? * 1e-3) / sgemm_gflops?)
    })();
    goal("W2 train >= 65% of numpy sgemm", w2_share, 65.0, "%");
    goal("W2 forward >= 1.0x JAX", ratio(ROWS[2].0, System::Jax), 1.0, "x");
    goal("nanoGPT shapes >= 1.3x JAX", ratio(ROWS[3].0, System::Jax), 1.3, "x");
    goal("nanoGPT shapes >= 1.3x PyTorch", ratio(ROWS[3].0, System::Torch), 1.3, "x");
    goal("W3 CNN train >= 2x JAX", ratio(ROWS[4].0, System::Jax), 2.0, "x");
    goal("W1 ICL looped >= 3x JAX", ratio(ROWS[6].0, System::Jax), 3.0, "x");
    goal("W1 ICL distinct >= 3x JAX", ratio(ROWS[7].0, System::Jax), 3.0, "x");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_select_workloads_and_reject_unknown_ones() {
        let o = parse_options(&args(&["--compare", "--rounds", "5", "--only", "cnn,w2-train", "--no-torch"])).unwrap();
        assert_eq!((o.rounds, o.torch, o.only), (5, false, vec!["cnn".to_string(), "w2-train".to_string()]));
        assert!(parse_options(&args(&["--compare"])).unwrap().only.is_empty());
        let err = parse_options(&args(&["--only", "resnet"])).err().unwrap();
        assert!(err.contains("resnet") && err.contains("cnn-train"), "{err}");
        assert!(parse_options(&args(&["--only"])).is_err());
        assert!(parse_options(&args(&["--rounds", "0"])).is_err());
        assert!(parse_options(&args(&["--fast"])).err().unwrap().contains("--only"));
    }
}
