//! The `strata` binary as a user drives it: configs printed, edited and run back, and the errors a bad config
//! gets.

use std::process::Command;

fn strata(args: &[&str], out: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).arg("--out").arg(out).output().expect("runs")
}

#[test]
fn a_printed_config_runs_back_to_the_same_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let printed = strata(&["reproduce", "datamodels/estimate", "--smoke", "--print-config"], dir.path());
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let config: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(config["trials"], 2, "the smoke preset");
    let file = dir.path().join("estimate.json");
    std::fs::write(&file, &printed.stdout).unwrap();
    let from_file = dir.path().join("a");
    let from_preset = dir.path().join("b");
    let ran = strata(&["reproduce", "datamodels/estimate", "--config", file.to_str().unwrap()], &from_file);
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    assert!(strata(&["reproduce", "datamodels/estimate", "--smoke"], &from_preset).status.success());
    let report = |d: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("datamodels/estimate/report.json")).unwrap()).unwrap()
    };
    let (a, b) = (report(&from_file), report(&from_preset));
    assert_eq!(a["metrics"], b["metrics"]);
    assert_eq!(a["config"], config, "the report stores the exact config it ran");
}

#[test]
fn unknown_and_ill_typed_config_fields_are_errors_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let printed = strata(&["reproduce", "icl/depth-vs-kappa", "--smoke", "--print-config"], dir.path());
    let config: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    let cases = [
        ("training.stepz", {
            let mut c = config.clone();
            c["training"]["stepz"] = 3.into();
            c
        }),
        ("kappas[1]", {
            let mut c = config.clone();
            c["kappas"][1] = "ten".into();
            c
        }),
        ("loss_target", {
            let mut c = config.clone();
            c.as_object_mut().unwrap().remove("loss_target");
            c
        }),
    ];
    for (field, bad) in cases {
        let file = dir.path().join("bad.json");
        std::fs::write(&file, bad.to_string()).unwrap();
        let out = strata(&["reproduce", "icl/depth-vs-kappa", "--config", file.to_str().unwrap()], dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{field}: accepted");
        let named = field.rsplit('.').next().unwrap().split('[').next().unwrap();
        assert!(err.contains(named), "{field}: {err}");
    }
    let out = strata(&["reproduce", "no/such", "--smoke"], dir.path());
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("unknown experiment"));
}

#[test]
fn the_list_comes_from_the_crates() {
    let dir = tempfile::tempdir().unwrap();
    let out = strata(&["reproduce", "--list"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    for id in [
        "tensor/foundations",
        "icl/looped-gd",
        "icl/monotonicity",
        "saliency/complete-sound",
        "lm/wikitext2",
        "datamodels/groups",
    ] {
        assert!(text.contains(id), "{id} missing from\n{text}");
    }
}

#[test]
fn set_overrides_fields_and_refuses_typos_and_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    let out = strata(
        &[
            "reproduce",
            "mwp/svamp-sym",
            "--smoke",
            "--set",
            "backend.base_url=http://gpu-box:8000/v1",
            "--set",
            "generation.max_tokens=256",
            "--set",
            "generation.stop=[\"\\n\\n\", \"Q:\"]",
            "--print-config",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["backend"]["base_url"], "http://gpu-box:8000/v1", "a non-JSON value is a string");
    assert_eq!(config["generation"]["max_tokens"], 256);
    assert_eq!(config["generation"]["stop"], serde_json::json!(["\n\n", "Q:"]));
    // A whole section as JSON: the Strata decoder backend.
    let out = strata(
        &[
            "reproduce",
            "mwp/svamp-sym",
            "--smoke",
            "--set",
            r#"backend={"kind":"strata","weights":"model.safetensors","tokenizer":{"kind":"bytes"}}"#,
            "--print-config",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (spec, named) in [
        ("backend.modle=x", "modle"),
        ("generation.max_tokens=many", "max_tokens"),
        ("problems.count=3", "problems"),
        ("no_equals_sign", "PATH=VALUE"),
    ] {
        let out = strata(&["reproduce", "mwp/svamp-sym", "--smoke", "--set", spec, "--print-config"], dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(named), "{spec}: {err}");
    }
    let out = strata(&["reproduce", "all", "--smoke", "--set", "problems=3"], dir.path());
    assert!(!out.status.success());
    let out = strata(&["reproduce", "all", "--smoke", "--skip", "no/such"], dir.path());
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no/such"));
}
