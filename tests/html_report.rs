//! `report.html` end to end: written by `analyze`, redrawn by `dwell report`, drawn by a
//! real browser (headless Chromium) without console errors, small enough for long runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const FIGURES: [&str; 12] = [
    "fig-recommendations",
    "fig-matrix",
    "fig-trajectories-distance",
    "fig-trajectories-straightness",
    "fig-trajectories-relative",
    "fig-cloud",
    "fig-f1",
    "fig-speed",
    "fig-straightness",
    "fig-sweep",
    "fig-clustering",
    "fig-evidence",
];

fn analyze_fixture(dir: &Path) -> PathBuf {
    let (output, state) = common::analyze_fixture(dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("report.html"), "{stdout}");
    state
}

fn redraw(state: &Path) {
    let output = dwell()
        .args(["report", "--state"])
        .arg(state)
        .output()
        .unwrap();
    assert_succeeded(&output);
}

/// The figures' JSON as embedded in the page.
fn figure_data(html: &str) -> serde_json::Value {
    let start_tag = r#"<script type="application/json" id="figure-data">"#;
    let start = html.find(start_tag).expect("a figure-data block") + start_tag.len();
    let end = start + html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

/// Screenshots are kept for a person to look at; `target/` is not committed.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Browser {
    dom: String,
    console: Vec<String>,
}

/// Loads `page` in headless Chromium, dumps the DOM after the scripts ran and takes a
/// 1280 px wide screenshot. Console messages (errors, uncaught exceptions) reach stderr
/// as `CONSOLE` lines through `--enable-logging=stderr`; the page itself never logs.
fn chromium(page: &Path, screenshot: &Path, scratch: &Path) -> Browser {
    let common_flags = |profile: &str| {
        let mut command = Command::new("timeout");
        command.args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ]);
        command.arg(format!(
            "--user-data-dir={}",
            scratch.join(profile).display()
        ));
        command
    };
    let url = format!("file://{}", page.display());
    let run = |mut command: Command| {
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "chromium failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    let mut dump = common_flags("dump");
    dump.args(["--dump-dom", &url]);
    let dumped = run(dump);
    let mut shot = common_flags("shot");
    shot.arg(format!("--screenshot={}", screenshot.display()))
        .arg("--window-size=1280,5100")
        .arg(&url);
    let shot = run(shot);
    let console = [&dumped.stderr, &shot.stderr]
        .iter()
        .flat_map(|stderr| {
            String::from_utf8_lossy(stderr)
                .into_owned()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|line| line.contains("CONSOLE") || line.contains("Uncaught"))
        .collect();
    Browser {
        dom: String::from_utf8_lossy(&dumped.stdout).into_owned(),
        console,
    }
}

fn require_chromium() {
    let found = Command::new("chromium").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "this test needs Chromium: `apt-get install -y chromium` (Debian; .ci/run installs it)"
    );
}

/// The opening tag of the element with `id`, as the browser left it.
fn opening_tag<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!(r#"id="{id}""#))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

#[test]
fn report_html_draws_every_figure_in_chromium_without_console_errors() {
    require_chromium();
    let dir = tempfile::tempdir().unwrap();
    let state = analyze_fixture(dir.path());
    let page = state.join("report.html");
    let written = std::fs::read(&page).unwrap();
    std::fs::remove_file(&page).unwrap();
    redraw(&state);
    assert_eq!(
        std::fs::read(&page).unwrap(),
        written,
        "`dwell report` redraws the page `analyze` wrote"
    );
    let html = String::from_utf8(written).unwrap();
    for forbidden in ["http://", "https://", "<link", " src="] {
        assert!(
            !html.contains(forbidden),
            "the page must not load {forbidden}"
        );
    }

    let screenshot = artifacts().join("report-fixture.png");
    let browser = chromium(&page, &screenshot, dir.path());
    assert!(
        browser.console.is_empty(),
        "console: {:#?}",
        browser.console
    );
    for id in FIGURES {
        let tag = opening_tag(&browser.dom, id).unwrap_or_else(|| panic!("no #{id} in the page"));
        assert!(
            tag.contains(r#"data-nonempty="true""#),
            "#{id} drew nothing: {tag}"
        );
    }
    assert!(
        browser.dom.contains("<canvas"),
        "figures are drawn on canvases"
    );
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);

    // The check above can only pass for a good reason if a broken page fails it.
    let broken = dir.path().join("broken.html");
    std::fs::write(
        &broken,
        html.replace("</body>", "<script>null.draw();</script></body>"),
    )
    .unwrap();
    let browser = chromium(&broken, &artifacts().join("broken.png"), dir.path());
    assert!(
        browser.console.iter().any(|line| line.contains("Uncaught")),
        "an uncaught exception is detected: {:#?}",
        browser.console
    );
}

#[test]
fn figure_data_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let state = analyze_fixture(dir.path());
    let data = figure_data(&std::fs::read_to_string(state.join("report.html")).unwrap());
    let trajectories = &data["trajectories"];
    let sampled = trajectories["sampled"].as_array().unwrap();
    assert_eq!(sampled.len(), 90, "10 per class");
    let cloud = trajectories["cloud"].as_array().unwrap();
    assert_eq!(cloud.len(), 12);
    assert!(cloud.iter().all(|c| c.as_array().unwrap().len() == 405 * 2));
    // A subset keeps the snapshot readable: two trajectories in full.
    let first_two: Vec<serde_json::Value> = sampled[..2]
        .iter()
        .map(|e| {
            let e = e.as_u64().unwrap() as usize;
            let path: Vec<_> = cloud
                .iter()
                .map(|c| serde_json::json!([c[2 * e], c[2 * e + 1]]))
                .collect();
            serde_json::json!({ "example": e, "class": trajectories["classes"][e], "path": path })
        })
        .collect();
    let panels: Vec<serde_json::Value> = trajectories["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            serde_json::json!({
                "detector": p["detector"],
                "parameters": p["parameters"],
                "stays": p["stays"].as_array().unwrap()[..2],
            })
        })
        .collect();
    let summary = serde_json::json!({
        "labels": data["labels"],
        "steps": data["steps"],
        "macro_f1": data["macro_f1"],
        "f1": data["f1"],
        "speed": data["speed"],
        "straightness": data["straightness"],
        "matrix": data["matrix"],
        "sweeps": data["sweeps"],
        "trajectories": { "first_two": first_two, "panels": panels },
        "run_advice": data["run_advice"],
        "clustering": {
            "methods": data["clustering"]["methods"],
            "moved": data["clustering"]["moved"].as_array().unwrap().len(),
        },
        "detector_evidence": data["detector_evidence"],
    });
    insta::assert_json_snapshot!("tiny_run_figures", summary);
}

/// SPEC's scale: 405 probe examples × 50 checkpoints must stay under 5 MB. The fixture's
/// stored checkpoints are reused in a cycle as steps 40..2000; the report is stretched to
/// match and the page is redrawn from the state directory.
#[test]
fn page_for_405_examples_and_50_checkpoints_is_under_5_mb() {
    let dir = tempfile::tempdir().unwrap();
    let fixture_state = analyze_fixture(dir.path());
    let state = dir.path().join("long");
    std::fs::create_dir_all(state.join("embeddings")).unwrap();
    std::fs::copy(fixture_state.join("state.json"), state.join("state.json")).unwrap();
    let mut report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture_state.join("report.json")).unwrap()).unwrap();
    let original = report["checkpoints"].as_array().unwrap().clone();
    let steps: Vec<u64> = (1..=50).map(|i| 40 * i).collect();
    let source_step = |i: usize| original[i % original.len()]["step"].as_u64().unwrap();
    for (i, step) in steps.iter().enumerate() {
        std::fs::copy(
            fixture_state.join(format!("embeddings/step-{}.safetensors", source_step(i))),
            state.join(format!("embeddings/step-{step}.safetensors")),
        )
        .unwrap();
    }
    report["checkpoints"] = steps
        .iter()
        .enumerate()
        .map(|(i, &step)| {
            let mut checkpoint = original[i % original.len()].clone();
            checkpoint["step"] = step.into();
            checkpoint
        })
        .collect();
    for class in report["classes"].as_array_mut().unwrap() {
        let stretch = |series: &serde_json::Value, from: usize| -> serde_json::Value {
            let values = series.as_array().unwrap();
            steps[from..]
                .iter()
                .enumerate()
                .map(|(i, &step)| {
                    serde_json::json!({ "step": step, "value": values[i % values.len()]["value"] })
                })
                .collect()
        };
        class["speed"] = stretch(&class["speed"], 1);
        class["straightness"] = stretch(&class["straightness"], 0);
    }
    std::fs::write(
        state.join("report.json"),
        serde_json::to_vec(&report).unwrap(),
    )
    .unwrap();
    redraw(&state);
    let html = std::fs::read_to_string(state.join("report.html")).unwrap();
    let data = figure_data(&html);
    assert_eq!(data["trajectories"]["cloud"].as_array().unwrap().len(), 50);
    let fixture_size = std::fs::metadata(fixture_state.join("report.html"))
        .unwrap()
        .len();
    eprintln!(
        "report.html: {fixture_size} bytes for the fixture (405 × 12), {} bytes for 405 × 50",
        html.len()
    );
    assert!(html.len() < 5_000_000, "{} bytes", html.len());
}
