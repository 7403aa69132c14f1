//! A short simulated day (20 couriers, 300 orders) against the real server
//! through the client core: every invariant of the run holds, and the day
//! came to what a working system delivers.

use anyhow::{Result, ensure};
use xianlu_tests::sim::{Options, Scale};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_simulated_day_keeps_every_invariant() -> Result<()> {
    let dir = tempfile_dir()?;
    let date = chrono::NaiveDate::from_ymd_opt(2030, 6, 3).unwrap_or_default();
    let options = Options::fast(3, Scale::SMALL, date, dir.clone());
    let summary = xianlu_tests::sim::run(&options).await;
    let _ = std::fs::remove_dir_all(&dir);
    let summary = summary?;
    println!("{summary}");
    ensure!(summary.passed(), "a check failed:\n{summary}");
    ensure!(summary.orders == 300, "every order was placed: {}", summary.orders);
    // What goes wrong at the door is a few per cent; nearly everything else is signed.
    ensure!(summary.fulfilment_rate() > 0.85, "fulfilled {:.3}", summary.fulfilment_rate());
    ensure!(summary.short_lines > 0, "the scarce product ran out");
    ensure!(summary.complaints > 0, "complaints came in after signing");
    ensure!(summary.positions_stored > 0 && summary.events > 3 * summary.orders);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("xianlu-sim-test-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
