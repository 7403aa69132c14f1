//! Tauri's build step, with a permission generated for each of the app's
//! commands, so the capability file can allow exactly the ones the screens use.

fn main() {
    let manifest = tauri_build::AppManifest::new().commands(&[
        "default_server",
        "login",
        "logout",
        "office",
        "order",
        "evidence_image",
        "command",
        "acknowledge",
        "couriers",
        "roads",
        "trail",
        "pin",
        "lock",
        "stock",
        "path",
    ]);
    if let Err(error) = tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest)) {
        panic!("tauri build step: {error:#}");
    }
}
