//! Reports: computed claims, files on disk, figures.

use strata_report::figure::{Chart, ImageGrid, Series, image_grid, line_chart};
use strata_report::{Check, Report, RunCtx, Scale, Verdict, fraction, max_or_nan};

fn ctx(dir: &std::path::Path) -> RunCtx {
    RunCtx::new("family/name", 7, Scale::Quick, dir.to_path_buf())
}

#[test]
fn checks_state_their_threshold_once_and_non_finite_is_not_measured() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path());
    let mut r = Report::new(&c, &serde_json::json!({"k": 1}));
    assert_eq!(r.check("a", "s", "x", 0.5, Check::Below(1.0)), Verdict::Holds);
    assert_eq!(r.check("b", "s", "x", 2.0, Check::Below(1.0)), Verdict::Fails);
    assert_eq!(r.check("c", "s", "x", f64::NAN, Check::AtLeast(0.0)), Verdict::NotMeasured);
    assert_eq!(r.check("d", "s", "depth", f64::INFINITY, Check::Above(0.0)), Verdict::NotMeasured);
    assert_eq!(r.check("e", "s", "ratio", 1.04, Check::Within { target: 1.0, tolerance: 0.05 }), Verdict::Holds);
    assert_eq!(r.check("f", "s", "frac", 0.5, Check::Between(0.6, 1.0)), Verdict::Fails);
    assert_eq!(r.claims_held(), (2, 6));
    assert_eq!(r.claims_not_measured(), 2);
    assert_eq!(r.claims[0].expected, "x < 1");
    assert_eq!(r.claims[4].expected, "ratio within 0.05 of 1");
    assert_eq!(r.claims[5].expected, "0.6 <= frac <= 1");
    // Empty ranges and fractions of nothing are not measurements.
    assert!(max_or_nan(std::iter::empty()).is_nan() && fraction(0, 0).is_nan());
    assert_eq!(max_or_nan([1.0, 3.0, 2.0]), 3.0);
    assert!(max_or_nan([1.0, f64::NAN]).is_nan(), "a NaN is never hidden by a max");
    r.timing("tokens_per_s", 123.0);
    let out = r.finish(&c).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for key in ["experiment", "git_rev", "seed", "scale", "config", "metrics", "timings", "claims", "figures"] {
        assert!(json.get(key).is_some(), "report.json lacks {key}");
    }
    assert_eq!(json["claims"][1]["verdict"], "fails");
    assert_eq!(json["claims"][2]["verdict"], "not_measured");
    assert_eq!(json["claims"][2]["measured"], serde_json::Value::Null);
    assert_eq!(json["seed"], 7);
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back.claims.len(), 6);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("2 of 6 hold, 2 not measured") && md.contains("| b |") && md.contains("not measured |"));
    assert!(md.contains("Timings"));
}

#[test]
fn seeds_come_from_labels_and_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path());
    let labels: Vec<String> = (0..3)
        .flat_map(|k| (0..6).flat_map(move |f| (1..=12).map(move |d| format!("model kappa{k} family{f} L{d}"))))
        .collect();
    let seeds: std::collections::HashSet<u64> = labels.iter().map(|l| c.seed_for(l)).collect();
    assert_eq!(seeds.len(), labels.len(), "distinct labels give distinct seeds");
    assert_eq!(c.seed_for("eval"), ctx(dir.path()).seed_for("eval"), "stable for the same run seed");
    let other = RunCtx::new("family/name", 8, Scale::Quick, dir.path().to_path_buf());
    assert_ne!(c.seed_for("eval"), other.seed_for("eval"));
    use rand::RngExt;
    let (mut a, mut b) = (c.rng("x"), c.rng("x"));
    assert_eq!(a.random::<u64>(), b.random::<u64>());
}

#[test]
fn a_chart_with_nothing_to_draw_becomes_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path());
    let mut r = Report::new(&c, &());
    let empty = Chart::new("t", "x", "y").log_y().series(Series::line("a", vec![(1.0, f64::NAN), (2.0, 0.0)]));
    r.line_figure(&c, "e.png", "empty", &empty).unwrap();
    assert!(r.figures.is_empty() && r.notes[0].contains("not drawn"));
    let some = Chart::new("t", "x", "y").series(Series::line("a", vec![(1.0, 1.0), (2.0, 3.0)]));
    r.line_figure(&c, "s.png", "some", &some).unwrap();
    assert_eq!(r.figures.len(), 1);
}

#[test]
fn figures_are_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path());
    let mut r = Report::new(&c, &());
    let chart = Chart::new("t", "x", "y")
        .log_y()
        .series(Series::line("a", vec![(1.0, 1.0), (2.0, 0.1)]))
        .series(Series::reference("b", vec![(1.0, 0.5), (2.0, f64::NAN)]));
    r.figure(&c, "c.png", "chart", |p| line_chart(p, &chart)).unwrap();
    let grid = ImageGrid {
        title: "g",
        row_titles: vec!["r".into()],
        col_titles: vec!["c1".into(), "c2".into()],
        panels: vec![vec![(2, 2, vec![0.0, 1.0, 2.0, 3.0]), (1, 1, vec![5.0])]],
        heat: true,
    };
    r.figure(&c, "g.png", "grid", |p| image_grid(p, &grid)).unwrap();
    for f in ["c.png", "g.png"] {
        let bytes = std::fs::read(dir.path().join("family/name").join(f)).unwrap();
        assert_eq!(&bytes[..4], b"\x89PNG");
    }
    // A chart with nothing finite to draw is an error, not an empty picture.
    let empty = Chart::new("t", "x", "y").series(Series::line("a", vec![(f64::NAN, 1.0)]));
    assert!(line_chart(&dir.path().join("e.png"), &empty).is_err());
}

#[test]
fn tick_labels_have_no_float_noise() {
    use strata_report::figure::tick;
    assert_eq!(tick(0.7000000000000001), "0.7");
    assert_eq!(tick(2.0), "2");
    assert_eq!(tick(0.0), "0");
    assert_eq!(tick(1.5e-7), "1.5e-7");
    assert_eq!(tick(250000.0), "2.5e5");
}
