//! Project automation: `cargo xtask setup | demo | test | bench`.
//!
//! xtask depends on nothing but `anyhow`, so it builds before any system
//! package is installed; everything heavier runs as child processes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

const USAGE: &str = "\
cargo xtask <command>

  setup   install what building and testing need (idempotent)
  demo    build, start the server on SQLite at http://127.0.0.1:8080 and run a simulated city's day
          at 60× for watching in the apps (--pace N, --seed N, --scale small|city; --stories: the
          scripted stories driver instead)
  test    rustfmt, clippy, dependency rules, wasm builds, every test on SQLite and PostgreSQL,
          the customer and courier apps in headless Chromium and the desktop app under Xvfb
  web     build the apps for the web (customer at /t/{token} and /app, courier at /courier)
  merchant  build and open the merchant desktop app (Tauri) against the demo's server [URL] (--build: only build)
  bench   transitions, push, client core, courier operations and the route planner against PyVRP;
          figures for docs/benchmarks.md (--quick: a shorter run)";

/// Debian packages the workspace needs to build and test.
const APT_PACKAGES: &[&str] = &[
    "build-essential",
    "pkg-config",
    "ca-certificates",
    "postgresql",
    "postgresql-client",
    // The Dioxus desktop builds (the apps' stand-in for mobile here).
    "libwebkit2gtk-4.1-dev",
    "libgtk-3-dev",
    "libsoup-3.0-dev",
    "libxdo-dev",
    // The courier app's desktop window under a virtual display: typed into, captured.
    "xvfb",
    "xdotool",
    "x11-apps",
    // The merchant app's WebDriver tests (tauri-driver drives WebKitWebDriver);
    // its desktop notifications (notify-send), shown in the tests by a real
    // notification daemon on the virtual display.
    "webkit2gtk-driver",
    "libnotify-bin",
    "dunst",
    // Browser tests of the web builds, and what their pages need.
    "chromium",
    "fonts-noto-cjk",
    "nodejs",
    "gzip",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("demo") => demo(&args[1..]),
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        Some("merchant") => merchant(&args[1..]),
        Some("web") => {
            setup()?;
            web_builds().map(|_| ())
        }
        _ => {
            println!("{USAGE}");
            Ok(())
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).context("xtask lives inside the workspace")
}

/// One cache outside the clone, shared by every checkout and CI run on this machine.
fn default_target_dir() -> String {
    let base = std::env::var("XDG_CACHE_HOME")
        .ok()
        .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/.cache")))
        .unwrap_or_else(|| "/tmp".into());
    format!("{base}/xianlu/target")
}

/// The peer solver for the planner benchmark: PyVRP at the version pinned in
/// tests/bench/requirements.txt, in a virtual environment in the cache.
fn pyvrp_python() -> Result<PathBuf> {
    let base = PathBuf::from(default_target_dir()).parent().map(Path::to_path_buf).unwrap_or_else(|| "/tmp".into());
    let venv = base.join("pyvrp-venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        if !dpkg_installed("python3-venv") && Path::new("/usr/bin/apt-get").exists() {
            run(Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends", "python3-venv"])
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
        }
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let requirements = Path::new("tests/bench/requirements.txt");
    let wanted = std::fs::read_to_string(requirements)?;
    let installed = Command::new(venv.join("bin").join("pip")).args(["freeze"]).output()?;
    let installed = String::from_utf8_lossy(&installed.stdout).to_string();
    if wanted.lines().map(str::trim).filter(|l| !l.is_empty()).any(|l| !installed.lines().any(|i| i.trim() == l)) {
        run(Command::new(venv.join("bin").join("pip")).args(["install", "-q", "-r"]).arg(requirements))?;
    }
    Ok(python)
}

fn target_dir() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| default_target_dir()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Cargo, building into the shared cache outside the clone.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.env("CARGO_TARGET_DIR", target_dir());
    cmd
}

// ----- setup -----

fn setup() -> Result<()> {
    let started = Instant::now();
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if !missing.is_empty() {
        if !Path::new("/usr/bin/apt-get").exists() {
            bail!("these packages are missing and there is no apt-get to install them: {missing:?}");
        }
        println!("installing {}", missing.join(" "));
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if Path::new("/usr/bin/rustup").exists() || succeeds(Command::new("rustup").arg("--version")) {
        let installed = Command::new("rustup").args(["target", "list", "--installed"]).output()?;
        if !String::from_utf8_lossy(&installed.stdout).contains("wasm32-unknown-unknown") {
            run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
        }
        let components = Command::new("rustup").args(["component", "list", "--installed"]).output()?;
        let components = String::from_utf8_lossy(&components.stdout).to_string();
        for component in ["rustfmt", "clippy"] {
            if !components.contains(component) {
                run(Command::new("rustup").args(["component", "add", component]))?;
            }
        }
    }
    if !succeeds(cargo().args(["nextest", "--version"])) {
        println!("installing cargo-nextest");
        run(cargo().args(["install", "cargo-nextest", "--locked"]))?;
    }
    // wasm-bindgen's command line must match the library in Cargo.lock exactly.
    let wanted = locked_version("wasm-bindgen")?;
    let have = Command::new("wasm-bindgen").arg("--version").output().ok();
    let have = have.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
    if have != format!("wasm-bindgen {wanted}") {
        println!("installing wasm-bindgen-cli {wanted}");
        // Not --locked: its lock names a webpki-roots the registry here lacks.
        run(cargo().args(["install", "wasm-bindgen-cli", "--version", &wanted]))?;
    }
    if !succeeds(Command::new("tauri-driver").arg("--help")) {
        println!("installing tauri-driver");
        run(cargo().args(["install", "tauri-driver", "--locked"]))?;
    }
    // The browser driver for the web builds' tests.
    let e2e = Path::new("tests/e2e");
    let stamp = e2e.join("node_modules/.installed-from-lock");
    let lock = std::fs::read(e2e.join("package-lock.json")).unwrap_or_default();
    if std::fs::read(&stamp).ok().as_deref() != Some(lock.as_slice()) {
        run(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--prefix"]).arg(e2e))?;
        std::fs::write(&stamp, &lock)?;
    }
    println!("setup done in {:.1?}", started.elapsed());
    Ok(())
}

/// The version of a package in Cargo.lock.
fn locked_version(name: &str) -> Result<String> {
    let lock = std::fs::read_to_string("Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == format!("name = \"{name}\"")
            && let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \""))
        {
            return Ok(v.trim_end_matches('"').to_owned());
        }
    }
    bail!("{name} is not in Cargo.lock")
}

/// An app with a web build the server serves.
struct WebApp {
    package: &'static str,
    /// Directory under the target dir.
    out: &'static str,
    /// Where the server serves its files.
    mount: &'static str,
    title: &'static str,
}

const CUSTOMER_WEB: WebApp =
    WebApp { package: "xianlu-customer", out: "customer-web", mount: "/t/_app", title: "鲜路 · 订单追踪" };
const COURIER_WEB: WebApp =
    WebApp { package: "xianlu-courier", out: "courier-web", mount: "/courier/_app", title: "鲜路 · 骑手" };

/// Builds both apps' web builds; returns the customer's and the courier's directories.
fn web_builds() -> Result<(PathBuf, PathBuf)> {
    let customer = web_build(&CUSTOMER_WEB)?;
    let courier = web_build(&COURIER_WEB)?;
    Ok((customer.0, courier.0))
}

/// Builds an app for the web (release, wasm-bindgen, gzip; the wasm-opt
/// Debian ships is too old for this wasm) into `<target>/<out>`, which the
/// server serves (the customer's at `/t/…` and `/app`, the courier's at `/courier`).
/// Returns the directory and the compressed size of the script and wasm.
fn web_build(app: &WebApp) -> Result<(PathBuf, u64)> {
    run(cargo().args([
        "build",
        "--locked",
        "--release",
        "-p",
        app.package,
        "--target",
        "wasm32-unknown-unknown",
        "--no-default-features",
        "--features",
        "web",
    ]))?;
    let name = app.package.replace('-', "_");
    let wasm = target_dir().join(format!("wasm32-unknown-unknown/release/{}.wasm", app.package));
    let out = target_dir().join(app.out);
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    run(Command::new("wasm-bindgen")
        .args(["--target", "web", "--no-typescript", "--out-name", &name, "--out-dir"])
        .arg(&out)
        .arg(&wasm))?;
    let mount = app.mount;
    std::fs::write(
        out.join("index.html"),
        format!(
            "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"referrer\" content=\"no-referrer\"><title>{}</title></head>\
             <body><div id=\"main\"></div><script type=\"module\">\
             import init from '{mount}/{name}.js'; init({{ module_or_path: '{mount}/{name}_bg.wasm' }});\
             </script></body></html>\n",
            app.title
        ),
    )?;
    let mut compressed = 0;
    for file in [format!("{name}.js"), format!("{name}_bg.wasm")] {
        run(Command::new("gzip").args(["-9", "-k", "-f"]).arg(out.join(&file)))?;
        compressed += std::fs::metadata(out.join(format!("{file}.gz")))?.len();
    }
    println!("{}: {} bytes compressed (script and wasm) in {}", app.package, compressed, out.display());
    Ok((out, compressed))
}

/// The merchant app's own workspace (its own lock file: Tauri and Dioxus
/// desktop pin different webkit2gtk versions).
const MERCHANT: &str = "apps/merchant/Cargo.toml";

/// Builds the merchant app: its screens for the webview (wasm, release,
/// wasm-bindgen into `apps/merchant/dist`, which Tauri embeds), then the
/// Tauri shell (debug). Returns the app's path.
fn merchant_app() -> Result<PathBuf> {
    let lock = std::fs::read_to_string("apps/merchant/Cargo.lock")?;
    let wanted = locked_version("wasm-bindgen")?;
    ensure!(
        lock.contains(&format!("name = \"wasm-bindgen\"\nversion = \"{wanted}\"")),
        "apps/merchant/Cargo.lock must lock wasm-bindgen {wanted}, as the workspace does"
    );
    run(cargo().args([
        "build",
        "--locked",
        "--manifest-path",
        MERCHANT,
        "-p",
        "xianlu-merchant-ui",
        "--target",
        "wasm32-unknown-unknown",
        "--release",
    ]))?;
    let dist = Path::new("apps/merchant/dist");
    if dist.exists() {
        std::fs::remove_dir_all(dist)?;
    }
    run(Command::new("wasm-bindgen")
        .args(["--target", "web", "--no-typescript", "--out-name", "xianlu_merchant_ui", "--out-dir"])
        .arg(dist)
        .arg(target_dir().join("wasm32-unknown-unknown/release/xianlu-merchant-ui.wasm")))?;
    std::fs::write(
        dist.join("index.html"),
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>鲜路 · 商家</title></head>\
         <body><div id=\"main\"></div><script type=\"module\">import init from './xianlu_merchant_ui.js'; \
         init({ module_or_path: './xianlu_merchant_ui_bg.wasm' });</script></body></html>\n",
    )?;
    run(cargo().args(["build", "--locked", "--manifest-path", MERCHANT, "-p", "xianlu-merchant"]))?;
    Ok(target_dir().join("debug/xianlu-merchant"))
}

/// Builds and opens the merchant app (against `cargo xtask demo`'s server unless told otherwise).
fn merchant(args: &[String]) -> Result<()> {
    setup()?;
    let app = merchant_app()?;
    if args.iter().any(|a| a == "--build") {
        println!("merchant app: {}", app.display());
        return Ok(());
    }
    let server = args.first().map_or("http://127.0.0.1:8080", String::as_str);
    println!(
        "merchant app: {} (log in at {server} as sim.owner, sim.clerk or sim.service; the demo prints their passwords)",
        app.display()
    );
    run(Command::new(app).env("XIANLU_SERVER", server))
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

// ----- PostgreSQL for tests -----

fn postgres_answers() -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], 5432).into();
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// Makes sure the local PostgreSQL answers on 127.0.0.1:5432, starting it if needed.
fn ensure_postgres() -> Result<()> {
    if postgres_answers() {
        return Ok(());
    }
    println!("PostgreSQL is not answering on 127.0.0.1:5432; starting the local cluster");
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    for version in &versions {
        let _ = Command::new("pg_ctlcluster").args(["--skip-systemctl-redirect", version, "main", "start"]).status();
    }
    for _ in 0..30 {
        if postgres_answers() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!(
        "PostgreSQL does not answer on 127.0.0.1:5432 and could not be started (clusters found: {versions:?}); \
         the PostgreSQL tests cannot run"
    )
}

/// Runs SQL as the PostgreSQL superuser: over the local socket as the
/// `postgres` system user when we are root (peer authentication, as on a
/// fresh Debian install), else over TCP.
fn psql(sql: &str) -> Result<String> {
    let as_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    let mut cmd = if as_root && Path::new("/usr/sbin/runuser").exists() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "psql", "-d", "postgres"]);
        c
    } else {
        let mut c = Command::new("psql");
        c.args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"]);
        c
    };
    let output = cmd
        .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql])
        .current_dir("/")
        .output()
        .context("psql is needed to manage the test database")?;
    if !output.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The role tests connect as: a password login, so it works whatever
/// authentication the local server uses for TCP.
const TEST_ROLE: &str = "xianlu_test";

fn ensure_test_role() -> Result<()> {
    psql(&format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{TEST_ROLE}') THEN \
         CREATE ROLE {TEST_ROLE} LOGIN CREATEDB PASSWORD '{TEST_ROLE}'; END IF; END $$"
    ))?;
    Ok(())
}

fn test_admin_url(database: &str) -> String {
    format!("postgres://{TEST_ROLE}:{TEST_ROLE}@127.0.0.1:5432/{database}")
}

/// A uniquely named database for this run; every test database is created
/// with its name as prefix and all of them are dropped at the end.
struct RunDatabase {
    name: String,
}

impl RunDatabase {
    fn create() -> Result<RunDatabase> {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
        let name = format!("xianlu_run_{}_{stamp}", std::process::id());
        ensure_test_role()?;
        psql(&format!("CREATE DATABASE {name} OWNER {TEST_ROLE}"))?;
        Ok(RunDatabase { name })
    }
}

impl Drop for RunDatabase {
    fn drop(&mut self) {
        let like = format!("{}%", self.name);
        if let Ok(names) = psql(&format!("SELECT datname FROM pg_database WHERE datname LIKE '{like}'")) {
            for db in names.lines().filter(|l| !l.is_empty()) {
                let _ = psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
            }
        }
    }
}

// ----- test -----

fn stage(name: &str, timings: &mut Vec<(String, Duration)>, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("\n==> {name}");
    let started = Instant::now();
    let result = f();
    timings.push((name.to_owned(), started.elapsed()));
    println!("<== {name}: {:.1?}", started.elapsed());
    result
}

fn test() -> Result<()> {
    let started = Instant::now();
    let mut timings = Vec::new();
    let result = run_tests(&mut timings);
    println!("\nstage times:");
    for (name, took) in &timings {
        println!("  {name:<34} {took:>8.1?}");
    }
    println!("  {:<34} {:>8.1?}", "total", started.elapsed());
    result
}

fn run_tests(timings: &mut Vec<(String, Duration)>) -> Result<()> {
    stage("setup", timings, setup)?;
    stage("rustfmt", timings, || run(cargo().args(["fmt", "--all", "--check"])))?;
    stage("clippy", timings, || {
        run(cargo().args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]))
    })?;
    stage("dependency rules", timings, dependency_rules)?;
    stage("domain and client core for wasm32", timings, || {
        run(cargo().args(["build", "--locked", "-p", "xianlu-domain", "--target", "wasm32-unknown-unknown"]))?;
        run(cargo().args([
            "build",
            "--locked",
            "-p",
            "xianlu-core",
            "--no-default-features",
            "--target",
            "wasm32-unknown-unknown",
        ]))
    })?;
    let (mut web, mut courier_web) = (PathBuf::new(), PathBuf::new());
    stage("apps' web builds (customer, courier)", timings, || {
        (web, courier_web) = web_builds()?;
        Ok(())
    })?;
    stage("courier desktop app", timings, || run(cargo().args(["build", "--locked", "-p", "xianlu-courier"])))?;
    let mut merchant = PathBuf::new();
    stage("merchant app (Tauri, own workspace)", timings, || {
        merchant = merchant_app()?;
        run(cargo().args(["fmt", "--all", "--check", "--manifest-path", MERCHANT]))?;
        run(cargo()
            .args(["clippy", "--locked", "--manifest-path", MERCHANT, "-p", "xianlu-merchant", "--all-targets"])
            .args(["--", "-D", "warnings"]))?;
        run(cargo().args(["clippy", "--locked", "--manifest-path", MERCHANT, "-p", "xianlu-merchant-ui"]).args([
            "--target",
            "wasm32-unknown-unknown",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    stage("build tests", timings, || run(cargo().args(["nextest", "run", "--workspace", "--locked", "--no-run"])))?;
    stage("start PostgreSQL", timings, ensure_postgres)?;
    let run_db = RunDatabase::create()?;
    let admin_url = test_admin_url(&run_db.name);
    stage("tests (SQLite and PostgreSQL)", timings, || {
        run(cargo()
            .args(["nextest", "run", "--workspace", "--locked", "--no-fail-fast"])
            .env("TEST_XIANLU_POSTGRES_URL", &admin_url)
            .env("TEST_XIANLU_CUSTOMER_WEB", &web)
            .env("TEST_XIANLU_COURIER_WEB", &courier_web)
            .env("TEST_XIANLU_COURIER_DESKTOP", target_dir().join("debug/xianlu-courier"))
            .env("TEST_XIANLU_MERCHANT_APP", &merchant)
            .env("TEST_XIANLU_DB_PREFIX", &run_db.name))
    })?;
    drop(run_db);
    Ok(())
}

/// The architecture's invariants that a dependency tree can check.
fn dependency_rules() -> Result<()> {
    // xianlu-domain does no I/O: no runtime, database, HTTP or clock crates in its tree.
    let tree = cargo()
        .args(["tree", "--locked", "-p", "xianlu-domain", "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .output()?;
    if !tree.status.success() {
        bail!("cargo tree failed: {}", String::from_utf8_lossy(&tree.stderr));
    }
    let tree = String::from_utf8_lossy(&tree.stdout);
    let forbidden = ["tokio ", "sqlx", "reqwest", "axum", "hyper ", "rusqlite", "mio "];
    let found: Vec<&str> = forbidden.iter().copied().filter(|f| tree.lines().any(|l| l.starts_with(f))).collect();
    if !found.is_empty() {
        bail!("xianlu-domain must do no I/O, but depends on {found:?}");
    }
    let features =
        cargo().args(["tree", "--locked", "-p", "xianlu-domain", "-e", "features", "-i", "chrono"]).output()?;
    if String::from_utf8_lossy(&features.stdout).contains("chrono feature \"clock\"") {
        bail!("xianlu-domain must not read the clock, but chrono's `clock` feature is on in its tree");
    }
    println!("xianlu-domain: no I/O crates, no clock");
    // xianlu-core serves three apps and depends on none of their UI toolkits.
    let core = cargo()
        .args(["tree", "--locked", "-p", "xianlu-core", "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .output()?;
    let core = String::from_utf8_lossy(&core.stdout);
    let ui = ["dioxus", "tauri", "wry ", "tao ", "gtk ", "webkit2gtk", "egui", "iced", "slint"];
    let found: Vec<&str> = ui.iter().copied().filter(|f| core.lines().any(|l| l.starts_with(f))).collect();
    if !found.is_empty() {
        bail!("xianlu-core must have no UI dependency, but depends on {found:?}");
    }
    println!("xianlu-core: no UI crates");
    Ok(())
}

// ----- demo -----

fn wait_ready(url: &str, child: &mut Child) -> Result<()> {
    let addr: SocketAddr = url.trim_start_matches("http://").parse()?;
    for _ in 0..100 {
        if let Some(status) = child.try_wait()? {
            bail!("the server exited with {status}");
        }
        if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n");
            let mut reply = String::new();
            let _ = stream.read_to_string(&mut reply);
            if reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the server did not become ready at {url}")
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn demo(args: &[String]) -> Result<()> {
    setup()?;
    run(cargo().args(["build", "--locked", "-p", "xianlu-server", "-p", "xianlu-tests", "--bins"]))?;
    let (web, courier_web) = web_builds()?;
    if args.iter().any(|a| a == "--stories") {
        return stories(args, &web, &courier_web);
    }
    // The city simulation serves the day itself, in this process's terminal.
    let status = Command::new(target_dir().join("debug/xianlu-sim"))
        .arg("demo")
        .args(args)
        .arg("--customer-web-dir")
        .arg(&web)
        .arg("--courier-web-dir")
        .arg(&courier_web)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .status()
        .context("could not start xianlu-sim")?;
    if !status.success() {
        bail!("the simulation stopped: {status}");
    }
    Ok(())
}

/// The scripted stories (catch weight, substitution, accident, refusal,
/// cancellation) against a server of their own, then live orders.
fn stories(args: &[String], web: &Path, courier_web: &Path) -> Result<()> {
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1:8080", String::as_str);
    let url = format!("http://{listen}");
    let data = PathBuf::from("data/demo");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let bin = target_dir().join("debug");
    // A generated city over the demo's part of Beijing: the apps' maps draw
    // its roads and travel times follow them.
    run(Command::new(bin.join("xianlu-server"))
        .args(["import-map", "--generate", "7", "--size", "100"])
        .env("XIANLU_DATA_DIR", &data)
        .env("RUST_LOG", "warn"))?;
    let server = Command::new(bin.join("xianlu-server"))
        .env("XIANLU_LISTEN", listen)
        .env("XIANLU_DATA_DIR", &data)
        .env("XIANLU_PAYMENT_WEBHOOK_SECRET", "demo-gateway-secret")
        .env("XIANLU_CUSTOMER_WEB_DIR", web)
        .env("XIANLU_COURIER_WEB_DIR", courier_web)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .spawn()
        .context("could not start xianlu-server")?;
    let mut server = KillOnDrop(server);
    wait_ready(&url, &mut server.0)?;
    // The first admin comes from the command line, as on a real deployment.
    let created = Command::new(bin.join("xianlu-server"))
        .args(["user", "create", "admin", "--role", "admin"])
        .env("XIANLU_DATA_DIR", &data)
        .env("RUST_LOG", "warn")
        .output()
        .context("could not create the demo admin")?;
    let printed = String::from_utf8_lossy(&created.stdout);
    let password = printed
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .with_context(|| format!("no password printed: {printed}{}", String::from_utf8_lossy(&created.stderr)))?;
    // The demo driver seeds a merchant and drives orders through the real API, then
    // keeps going and prints the push stream until Ctrl-C.
    let driver = Command::new(bin.join("xianlu-demo"))
        .arg(&url)
        .args(args.iter().filter(|a| *a == "--once"))
        .env("DEMO_ADMIN_PASSWORD", password)
        .status()?;
    if !driver.success() {
        bail!("the demo driver failed");
    }
    Ok(())
}

// ----- bench -----

fn bench(args: &[String]) -> Result<()> {
    setup()?;
    ensure_postgres()?;
    run(cargo().args(["build", "--locked", "--release", "-p", "xianlu-tests", "--bins"]))?;
    run_bench("xianlu-bench", args, true, "the benchmark")?;
    run_bench("xianlu-core-bench", args, false, "the client core benchmark")?;
    run_bench("xianlu-ops-bench", args, true, "the courier operations benchmark")?;
    let python = pyvrp_python()?;
    let with_peer = [args, &["--python".to_owned(), python.display().to_string()]].concat();
    run_bench("xianlu-planner-bench", &with_peer, false, "the route planner benchmark")
}

/// Runs one benchmark binary, on a PostgreSQL database of its own when it needs one.
fn run_bench(binary: &str, args: &[String], database: bool, what: &str) -> Result<()> {
    let mut command = Command::new(target_dir().join("release").join(binary));
    command.args(args);
    let run_db = if database { Some(RunDatabase::create()?) } else { None };
    if let Some(db) = &run_db {
        command.env("TEST_XIANLU_POSTGRES_URL", test_admin_url(&db.name)).env("TEST_XIANLU_DB_PREFIX", &db.name);
    }
    let status = command.status()?;
    drop(run_db);
    if !status.success() {
        bail!("{what} failed");
    }
    Ok(())
}
