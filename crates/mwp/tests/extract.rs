use strata_mwp::extract::{Extracted, Rule, extract_expression, extract_number};

fn vars() -> Vec<String> {
    ["w", "x", "y", "z"].iter().map(|s| s.to_string()).collect()
}

#[test]
fn hand_written_formats() {
    let n = |t: &str| extract_number(t).display();
    assert_eq!(n("The answer is 51."), "51");
    assert_eq!(n("So she pays $1,200 in total.\nThe final answer is $1,250.50"), "1250.5");
    assert_eq!(n("76 - 25 = 51"), "51");
    assert_eq!(n("We get \\boxed{42} apples, not 40."), "42");
    assert_eq!(n("Thus \\( \\frac{3}{4} \\) of the cake."), "0.75");
    assert_eq!(n("Answer: -7 degrees"), "-7");
    assert_eq!(n("5 x 3 = 15"), "15");
    assert_eq!(n("I don't know."), "");
    assert_eq!(extract_number("no digits here").value, Extracted::Unparsed);

    let e = |t: &str| extract_expression(t, &vars()).display();
    assert_eq!(e("The final answer is \\boxed{w - (x + y)}."), "w - (x + y)");
    assert_eq!(e("Therefore, the answer is \\( w \\times x \\div y \\)"), "w * x / y");
    assert_eq!(e("The answer is 2x + y, since ..."), "2 * x + y");
    assert_eq!(e("So z = w - x."), "w - x");
    assert_eq!(e("w - x = 51"), "w - x");
    assert_eq!(e("$\\frac{w}{x}$ dollars"), "w / x");
    // Words are not variables; a bare number is a constant expression.
    assert_eq!(e("The answer is apples + 3"), "3");
    assert_eq!(e("The answer is w, x, y."), "");
    let boxed = extract_expression("answer is 3 but \\boxed{x+1}", &vars());
    assert_eq!(boxed.rule, Rule::Boxed);
}

/// Replies of a real model (SmolLM2-135M-Instruct on llama.cpp), saved from the local server, with the
/// answer each should give judged by hand.
#[test]
fn real_model_outputs() {
    let text = include_str!("data/model_outputs.jsonl");
    let mut checked = 0;
    for line in text.lines().skip(1) {
        let item: serde_json::Value = serde_json::from_str(line).unwrap();
        let reply = item["text"].as_str().unwrap();
        let variables: Vec<String> =
            item["variables"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        let got = if item["mode"] == "number" { extract_number(reply) } else { extract_expression(reply, &variables) };
        let expected = item["expected"].as_str().unwrap_or("");
        assert_eq!(got.display(), expected, "{} {} {}: {reply:?}", item["id"], item["stage"], item["turn"]);
        if expected.is_empty() {
            assert_eq!(got.value, Extracted::Unparsed);
        }
        checked += 1;
    }
    assert!(checked >= 50);
}
