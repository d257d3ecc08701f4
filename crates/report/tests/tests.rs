//! Reports: computed claims, files on disk, figures.

use strata_report::figure::{Chart, ImageGrid, Series, image_grid, line_chart};
use strata_report::{Report, RunCtx, Scale};

fn ctx(dir: &std::path::Path) -> RunCtx {
    RunCtx::new("family/name", 7, Scale::Quick, dir.to_path_buf())
}

#[test]
fn claims_are_computed_and_non_finite_never_holds() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path());
    let mut r = Report::new(&c, &serde_json::json!({"k": 1}));
    assert!(r.claim("a", "s", "x < 1", 0.5, |x| x < 1.0));
    assert!(!r.claim("b", "s", "x < 1", 2.0, |x| x < 1.0));
    assert!(!r.claim("c", "s", "anything", f64::NAN, |_| true));
    assert_eq!(r.claims_held(), (1, 3));
    let out = r.finish(&c).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for key in ["experiment", "git_rev", "seed", "scale", "config", "metrics", "claims", "figures", "wall_seconds"] {
        assert!(json.get(key).is_some(), "report.json lacks {key}");
    }
    assert_eq!(json["claims"][1]["holds"], false);
    assert_eq!(json["seed"], 7);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("1 of 3 hold") && md.contains("| b |"));
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
