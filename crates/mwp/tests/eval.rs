use strata_mwp::backend::{Backend, Finish, Reply, Request};
use strata_mwp::eval::{Generation, evaluate, numbers_match, summarize};
use strata_mwp::prompts::{PromptSet, render};
use strata_mwp::symbolic::{SymProblem, VariableStyle, symbolize};

fn problems() -> Vec<SymProblem> {
    let raw = [
        (
            "a-1",
            "Each pack costs 76 dollars. There is a discount of 25 dollars.",
            "How much is a pack?",
            "( 76.0 - 25.0 )",
            51.0,
            "Subtraction",
        ),
        (
            "a-2",
            "Tom has 3 boxes with 12 pens each and 4 loose pens.",
            "How many pens?",
            "( ( 3.0 * 12.0 ) + 4.0 )",
            40.0,
            "Multiplication",
        ),
        (
            "a-3",
            "7 friends share 45 sweets and 4 are left over.",
            "How many does each get?",
            "( ( 45.0 - 4.0 ) / 7.0 )",
            41.0 / 7.0,
            "Common-Division",
        ),
    ];
    raw.iter()
        .map(|(id, body, q, eq, ans, kind)| {
            let p = strata_mwp::data::text::SvampProblem {
                id: id.to_string(),
                body: body.to_string(),
                question: q.to_string(),
                equation: eq.to_string(),
                answer: *ans,
                kind: kind.to_string(),
            };
            symbolize(&p, VariableStyle::Wxyz).unwrap()
        })
        .collect()
}

/// A backend that knows the answers: numeric problems get the gold number, symbolic ones the gold
/// expression (or `wrong` for every symbolic one), written the way models write them.
struct Oracle {
    problems: Vec<SymProblem>,
    wrong: Option<&'static str>,
}

impl Backend for Oracle {
    fn identity(&self) -> String {
        "oracle".into()
    }

    fn generate(&self, request: &Request) -> strata_mwp::Result<Reply> {
        let first = &request.messages[0].content;
        let p = self.problems.iter().find(|p| first.contains(&p.symbolic_text) || first.contains(&p.text)).unwrap();
        let symbolic = first.contains(&p.symbolic_text);
        let answer = if symbolic {
            self.wrong.map(String::from).unwrap_or_else(|| format!("\\( {} \\)", p.symbolic_equation))
        } else {
            let v = strata_mwp::expr::to_f64(&p.answer);
            format!("{:.2}", v).trim_end_matches('0').trim_end_matches('.').to_string()
        };
        let text =
            if request.messages.len() == 3 { answer } else { format!("Step by step... so the answer is {answer}") };
        Ok(Reply { text, finish: Finish::Stop, tokens: None })
    }
}

fn generation() -> Generation {
    Generation { max_tokens: 64, answer_tokens: 16, temperature: 0.0, stop: vec![], concurrency: 3 }
}

#[test]
fn perfect_model_scores_one_everywhere() {
    let ps = problems();
    let oracle = Oracle { problems: ps.clone(), wrong: None };
    let rows = evaluate(&oracle, &ps, &PromptSet::default(), &generation(), 0, 8, &|| {}).unwrap();
    let s = summarize(&rows);
    assert_eq!(s.numeric_accuracy, 1.0, "{rows:#?}");
    assert_eq!((s.symbolic_accuracy, s.self_prompt_symbolic_accuracy), (1.0, 1.0));
    assert_eq!((s.alignment, s.self_prompt_alignment), (1.0, 1.0));
    // 41/7 written as 5.86 counts as the gold value rounded to two places.
    assert_eq!(rows[2].numeric.extracted, "5.86");
    assert_eq!(rows[2].gold_expression, "(x - y) / w");
}

#[test]
fn wrong_and_constant_symbolic_answers() {
    let ps = problems();
    let rows = evaluate(
        &Oracle { problems: ps.clone(), wrong: Some("w + x") },
        &ps,
        &PromptSet::default(),
        &generation(),
        0,
        8,
        &|| {},
    )
    .unwrap();
    let s = summarize(&rows);
    assert_eq!((s.numeric_accuracy, s.symbolic_accuracy), (1.0, 0.0));
    // w + x equals the own numeric answer nowhere (76 + 25, 3 + 12, 7 + 45).
    assert_eq!(s.alignment, 0.0);
    // A copied number is a constant: never aligned, counted.
    let rows = evaluate(
        &Oracle { problems: ps.clone(), wrong: Some("51") },
        &ps,
        &PromptSet::default(),
        &generation(),
        0,
        8,
        &|| {},
    )
    .unwrap();
    let s = summarize(&rows);
    assert_eq!((s.alignment, s.constant_symbolic, s.constant_self_prompt), (0.0, 3, 3));
}

#[test]
fn numbers_match_exactly_or_as_written_rounding() {
    let q = |n: i64, d: i64| num_rational::BigRational::new(n.into(), d.into());
    assert!(numbers_match(&q(51, 1), &q(51, 1)));
    assert!(numbers_match(&q(3333, 100), &q(100, 3)));
    assert!(!numbers_match(&q(33, 1), &q(100, 3)), "an integer is not a rounding");
    assert!(!numbers_match(&q(3334, 100), &q(100, 3)));
    assert!(!numbers_match(&q(5, 2), &q(3, 1)));
}

#[test]
fn prompt_templates_are_checked() {
    assert_eq!(render("Q: {problem}\n", &[("problem", "2 + 2?")]).unwrap(), "Q: 2 + 2?");
    assert!(render("Q: {problme}", &[("problem", "x")]).is_err(), "a misspelt placeholder is an error");
    assert_eq!(render("a {not a key} b", &[]).unwrap(), "a {not a key} b");
    PromptSet::default().validate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let defaults = PromptSet::default();
    for (name, text) in [
        ("numeric", &defaults.numeric),
        ("numeric_answer", &defaults.numeric_answer),
        ("symbolic", &defaults.symbolic),
        ("symbolic_answer", &defaults.symbolic_answer),
    ] {
        std::fs::write(dir.path().join(format!("{name}.txt")), text).unwrap();
    }
    let err = PromptSet::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("self_prompt.txt"), "{err}");
    std::fs::write(dir.path().join("self_prompt.txt"), "Q: {problem} {answer}").unwrap();
    let err = PromptSet::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("self_prompt") && err.contains("{answer}"), "{err}");
}
