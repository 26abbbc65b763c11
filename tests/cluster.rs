//! `dwell cluster`: the three clusterings' adjusted Rand indices on real runs, against
//! a second implementation.
//!
//! The expected values were computed with numpy, scipy 1.17.1 and scikit-learn 1.9.1
//! (/work/torchenv/bin/python), independently of dwell: the distance detector's
//! onsets (D = 0.5 × the median speed over the first 3 intervals, T = 4) in numpy, DTW
//! over scipy's `cdist` ground distances divided by n + m, `linkage(y, "ward")` on the
//! condensed matrices, `fcluster(Z, 9, "maxclust")`, `adjusted_rand_score` (printed
//! with repr). The tiny run's came from PyTorch's reference embeddings
//! (tests/fixtures/hf-tiny-run-reference.safetensors), not from dwell's.

mod common;

use common::{analyze_fixture, assert_succeeded, dwell, fixtures};

/// (method, ARI vs classes, ARI vs final)
type Expected = [(&'static str, f64, f64); 3];

const MINILM_DEV: Expected = [
    ("final", 0.5937091605060378, 1.0),
    ("trajectory", 0.5642098762368731, 0.8645685039303166),
    ("trimmed", 0.5516341307902755, 0.7013646277274362),
];

const TINY_RUN: Expected = [
    ("final", 0.24885650512633514, 1.0),
    ("trajectory", 0.27921929195811396, 0.5065506872792882),
    ("trimmed", 0.2588198863179584, 0.37453135194231585),
];

fn cluster_json(state: &std::path::Path) -> serde_json::Value {
    let output = dwell()
        .args(["cluster", "--json", "--state"])
        .arg(state)
        .output()
        .unwrap();
    assert_succeeded(&output);
    serde_json::from_slice(&output.stdout).unwrap()
}

fn assert_aris(json: &serde_json::Value, expected: &Expected) {
    for (method, vs_classes, vs_final) in expected {
        let result = &json["methods"][method];
        let got = (
            result["ari_vs_classes"].as_f64().unwrap(),
            result["ari_vs_final"].as_f64().unwrap(),
        );
        assert!(
            (got.0 - vs_classes).abs() < 1e-9 && (got.1 - vs_final).abs() < 1e-9,
            "{method}: {got:?}, expected ({vs_classes}, {vs_final})"
        );
    }
}

#[test]
fn minilm_dev_aris_equal_scipy_and_scikit_learn() {
    let json = cluster_json(&fixtures().join("minilm-dev/state"));
    assert_aris(&json, &MINILM_DEV);
    assert_eq!(json["clusters"], 9);
    assert_eq!(json["trimmed_by"], "distance");
    assert_eq!(json["steps"].as_array().unwrap().len(), 12);
    let sizes: u64 = json["methods"]["trimmed"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["size"].as_u64().unwrap())
        .sum();
    assert_eq!(sizes, 405);
    let moved = json["moved"].as_array().unwrap();
    assert!(!moved.is_empty());
    for example in moved {
        assert_ne!(example["trimmed_cluster"], serde_json::Value::Null);
        assert!(example["travels_with"].is_string() && example["settles_with"].is_string());
    }
}

#[test]
fn tiny_run_aris_equal_scipy_and_scikit_learn_on_pytorchs_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let (_, state) = analyze_fixture(dir.path());
    assert_aris(&cluster_json(&state), &TINY_RUN);
    let table = dwell()
        .args(["cluster", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert_succeeded(&table);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("405 probe examples in 9 clusters"), "{text}");
    assert!(
        text.contains("final                 0.249        1.000"),
        "{text}"
    );
    assert!(
        text.contains("examples travel with another cluster"),
        "{text}"
    );
}
