use std::collections::BTreeMap;

use num_rational::BigRational;
use proptest::prelude::*;
use strata_mwp::expr::{EvalError, Op, decimal_string};
use strata_mwp::{Equivalence, Expr};

fn q(n: i64, d: i64) -> BigRational {
    BigRational::new(n.into(), d.into())
}

#[test]
fn precedence_associativity_and_unary_minus() {
    let e = Expr::parse("2 + 3 * 4 - 10 / 4 / 5").unwrap();
    assert_eq!(e.eval(&BTreeMap::new()).unwrap(), q(27, 2));
    assert_eq!(Expr::parse("-(2 - 5) * -2").unwrap().eval(&BTreeMap::new()).unwrap(), q(-6, 1));
    assert_eq!(Expr::parse("8 - 3 - 2").unwrap(), Expr::parse("(8 - 3) - 2").unwrap());
    assert_ne!(Expr::parse("8 - 3 - 2").unwrap(), Expr::parse("8 - (3 - 2)").unwrap());
    assert_eq!(Expr::parse("[ 2 + {3} ]").unwrap().eval(&BTreeMap::new()).unwrap(), q(5, 1));
}

#[test]
fn numbers_are_exact_decimals_with_thousands_commas() {
    let v = |s: &str| Expr::parse(s).unwrap().eval(&BTreeMap::new()).unwrap();
    assert_eq!(v("0.1 + 0.2"), q(3, 10));
    assert_eq!(v("1,000 + 2,500.5"), q(7001, 2));
    assert_eq!(v("76.0 - 25.0"), q(51, 1));
    assert_eq!(v(".5"), q(1, 2));
    assert_eq!(v("1 / 3 * 3"), q(1, 1));
}

#[test]
fn implicit_multiplication_tags_and_symbols() {
    let env: BTreeMap<String, BigRational> =
        [("x".to_string(), q(3, 1)), ("w".to_string(), q(5, 1)), ("<1>".to_string(), q(7, 1))].into();
    let v = |s: &str| Expr::parse(s).unwrap().eval(&env).unwrap();
    assert_eq!(v("2x"), q(6, 1));
    assert_eq!(v("2(w - x)"), q(4, 1));
    assert_eq!(v("(w)(x)"), q(15, 1));
    assert_eq!(v("<1> × 2 ÷ x"), q(14, 3));
    assert_eq!(Expr::parse("( <2> - ( <1> - <3> ) )").unwrap().variables().len(), 3);
}

#[test]
fn errors_are_reported_not_panics() {
    for bad in ["", "2 +", "(2 + 3", "2 + 3)", "* 4", "2 $ 3", "<x", "()"] {
        assert!(Expr::parse(bad).is_err(), "{bad:?} should not parse");
    }
    let zero = Expr::parse("w / (x - x)").unwrap();
    let env: BTreeMap<String, BigRational> = [("w".into(), q(1, 1)), ("x".into(), q(2, 1))].into();
    assert_eq!(zero.eval(&env), Err(EvalError::DivisionByZero));
    assert_eq!(Expr::parse("y").unwrap().eval(&env), Err(EvalError::Unbound("y".into())));
}

#[test]
fn equivalence_by_random_rational_points() {
    let gold = Expr::parse("( w - ( x - y ) )").unwrap();
    for same in ["w - x + y", "y + w - x", "(w + y) - x", "-(x - w - y)", "2*(w - x + y)/2"] {
        assert_eq!(Expr::parse(same).unwrap().equivalent(&gold, 8, 1), Equivalence::Equal, "{same}");
    }
    for different in ["w - x - y", "w + x + y", "w - x", "x - w + y", "w - x + y + 0.001", "w*x/x - x + y + z"] {
        assert_eq!(Expr::parse(different).unwrap().equivalent(&gold, 8, 1), Equivalence::Different, "{different}");
    }
    // Equal where both are defined, but one divides by zero where the other does not: different functions.
    assert_eq!(
        Expr::parse("x * w / w").unwrap().equivalent(&Expr::parse("x").unwrap(), 8, 2),
        Equivalence::Equal,
        "w = 0 is never drawn"
    );
    assert_eq!(
        Expr::parse("w / (x - x)").unwrap().equivalent(&Expr::parse("w / (y - y)").unwrap(), 8, 3),
        Equivalence::Undecided
    );
    // A polynomial identity that one point could miss: (x - 1)(x - 2) vs x^2 - 3x + 2 + (x-1)(x-2)(x-3)*0.
    let a = Expr::parse("(x - 1) * (x - 2)").unwrap();
    let b = Expr::parse("x*x - 3*x + 2").unwrap();
    assert_eq!(a.equivalent(&b, 8, 4), Equivalence::Equal);
    let c = Expr::parse("x*x - 3*x + 2 + (x - 1)*(x - 2)*(x - 3)").unwrap();
    assert_eq!(a.equivalent(&c, 8, 4), Equivalence::Different);
}

#[test]
fn decimal_strings() {
    assert_eq!(decimal_string(&q(1, 8)).as_deref(), Some("0.125"));
    assert_eq!(decimal_string(&q(-51, 1)).as_deref(), Some("-51"));
    assert_eq!(decimal_string(&q(1, 3)), None);
    assert_eq!(Expr::Num(q(1, 3)).to_string(), "(1/3)");
}

/// Random expression trees over w, x, y and non-negative decimal literals (what the parser makes numbers of).
fn arb_expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        (0u32..2000, 0u32..3).prop_map(|(n, places)| Expr::Num(q(n as i64, 10i64.pow(places)))),
        prop::sample::select(vec!["w", "x", "y"]).prop_map(Expr::var),
    ];
    leaf.prop_recursive(5, 40, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Neg(Box::new(e))),
            (prop::sample::select(vec![Op::Add, Op::Sub, Op::Mul, Op::Div]), inner.clone(), inner)
                .prop_map(|(op, a, b)| Expr::bin(op, a, b)),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Printing then parsing gives back the same tree.
    #[test]
    fn print_then_parse_is_identity(e in arb_expr()) {
        let text = e.to_string();
        prop_assert_eq!(Expr::parse(&text).unwrap(), e, "printed as {}", text);
    }

    /// Rewrites that keep the value compare equal; adding a non-zero term does not.
    #[test]
    fn equivalent_rewrites_compare_equal(a in arb_expr(), b in arb_expr(), k in 1u32..50) {
        let sum = Expr::bin(Op::Add, a.clone(), b.clone());
        let commuted = Expr::bin(Op::Add, b.clone(), a.clone());
        let doubled = Expr::bin(Op::Div, Expr::bin(Op::Mul, Expr::num(2), sum.clone()), Expr::num(2));
        let neg_neg = Expr::Neg(Box::new(Expr::Neg(Box::new(sum.clone()))));
        let via_sub = Expr::bin(Op::Sub, a.clone(), Expr::Neg(Box::new(b.clone())));
        for rewrite in [commuted, doubled, neg_neg, via_sub] {
            let r = sum.equivalent(&rewrite, 6, 7);
            prop_assert!(r != Equivalence::Different, "{} vs {}", sum, rewrite);
        }
        let shifted = Expr::bin(Op::Add, sum.clone(), Expr::num(k as i64));
        prop_assert!(sum.equivalent(&shifted, 6, 7) != Equivalence::Equal, "{} vs {}", sum, shifted);
    }

    /// Exact evaluation agrees with f64 evaluation where the latter is well conditioned.
    #[test]
    fn exact_matches_float_evaluation(e in arb_expr(), w in 1i64..20, x in 1i64..20, y in 1i64..20) {
        let env: BTreeMap<String, BigRational> =
            [("w".into(), q(w, 1)), ("x".into(), q(x, 3)), ("y".into(), q(y, 7))].into();
        fn float(e: &Expr, env: &BTreeMap<String, f64>) -> f64 {
            match e {
                Expr::Num(v) => strata_mwp::expr::to_f64(v),
                Expr::Var(n) => env[n],
                Expr::Neg(a) => -float(a, env),
                Expr::Bin(op, a, b) => {
                    let (a, b) = (float(a, env), float(b, env));
                    match op { Op::Add => a + b, Op::Sub => a - b, Op::Mul => a * b, Op::Div => a / b }
                }
            }
        }
        let fenv: BTreeMap<String, f64> = env.iter().map(|(k, v)| (k.clone(), strata_mwp::expr::to_f64(v))).collect();
        if let Ok(exact) = e.eval(&env) {
            let f = float(&e, &fenv);
            let ex = strata_mwp::expr::to_f64(&exact);
            if f.is_finite() && ex.abs() < 1e6 {
                prop_assert!((f - ex).abs() <= 1e-6 * (1.0 + ex.abs()), "{} exact {} float {}", e, ex, f);
            }
        }
    }
}
