use std::collections::BTreeMap;

use strata_mwp::symbolic::{Exception, VariableStyle, numbers_in, symbolize_all};

#[test]
fn numbers_in_text() {
    let found: Vec<String> = numbers_in("He had 1,200 cards, 4, 5 and 3.5 more; 76 dollars.")
        .iter()
        .map(|s| strata_mwp::expr::decimal_string(&s.value).unwrap())
        .collect();
    assert_eq!(found, ["1200", "4", "5", "3.5", "76"]);
}

#[test]
fn variable_styles_name_numbers_in_order() {
    assert_eq!(VariableStyle::Wxyz.name(0), ("w".to_string(), false));
    assert_eq!(VariableStyle::Pqrs.name(3), ("s".to_string(), false));
    assert_eq!(VariableStyle::Ijkl.name(4), ("m".to_string(), true));
    assert_eq!(VariableStyle::Tags.name(4), ("<5>".to_string(), false));
}

/// All 1,000 problems: each symbolic gold equation, evaluated at the problem's own numbers, gives the gold
/// answer; the equations' numbers all come from the text except the listed exceptions.
#[test]
fn svamp_sym_all_problems() {
    let Some(root) = strata_mwp::data::testing::shared_data("mwp::svamp_sym_all_problems", &["svamp"]) else {
        return;
    };
    let svamp = strata_mwp::data::text::svamp(&root.join("svamp")).unwrap();
    for style in [VariableStyle::Wxyz, VariableStyle::Pqrs, VariableStyle::Ijkl, VariableStyle::Tags] {
        let all = symbolize_all(&svamp, style).unwrap();
        assert_eq!(all.len(), 1000);
        for p in &all {
            let value = p.symbolic_equation.eval(&p.values()).unwrap();
            assert_eq!(value, p.answer, "{}: {} at {:?}", p.id, p.symbolic_equation, p.values());
            // The symbolic text holds each variable and no digit of a replaced number.
            for (name, _) in &p.variables {
                assert!(p.symbolic_text.contains(name.as_str()), "{}: {name} missing", p.id);
            }
            assert!(!p.symbolic_text.chars().any(|c| c.is_ascii_digit()) || style == VariableStyle::Tags);
        }
        let mut by_kind: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in &all {
            for e in &p.exceptions {
                let kind = serde_json::to_value(e).unwrap()["kind"].as_str().unwrap().to_string();
                by_kind.entry(kind).or_default().push(p.id.clone());
            }
        }
        assert_eq!(by_kind["constant_in_equation"], ["chal-50"]);
        assert_eq!(by_kind["answer_disagrees_with_equation"], ["chal-680"]);
        assert_eq!(by_kind["type_typo"].len(), 1);
        assert_eq!(
            by_kind["repeated_number"],
            ["chal-6", "chal-242", "chal-274", "chal-348", "chal-385", "chal-713", "chal-978"]
        );
        if style == VariableStyle::Tags {
            assert!(!by_kind.contains_key("beyond_letter_set"));
        } else {
            assert_eq!(by_kind["beyond_letter_set"].len(), 1);
        }
        let five = all.iter().filter(|p| p.occurrences == 5).count();
        assert_eq!(five, 3, "three problems write five numbers");
        let kinds: std::collections::BTreeSet<&str> = all.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        let p680 = all.iter().find(|p| p.id == "chal-680").unwrap();
        assert!(
            matches!(p680.exceptions[0], Exception::AnswerDisagreesWithEquation { equation, answer } if equation == 5.0 && answer == 1.0)
        );
    }
}

#[test]
fn repeated_numbers_share_a_variable() {
    let p = strata_mwp::data::text::SvampProblem {
        id: "t-1".into(),
        body: "There were 3 dollars in the wallet. She collected 49 more. Then 49 were left.".into(),
        question: "How much more did she collect than 3 dollars?".into(),
        equation: "( 49.0 - 3.0 )".into(),
        answer: 46.0,
        kind: "Subtraction".into(),
    };
    let s = strata_mwp::symbolic::symbolize(&p, VariableStyle::Wxyz).unwrap();
    assert_eq!(s.variables.len(), 2);
    assert_eq!(s.symbolic_equation.to_string(), "x - w");
    assert_eq!(
        s.symbolic_text,
        "There were w dollars in the wallet. She collected x more. Then x were left. How much more did she collect than w dollars?"
    );
    assert_eq!(s.occurrences, 4);
}
