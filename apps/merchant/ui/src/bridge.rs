//! The one way the screens reach the native side: Tauri's `invoke`, with
//! JSON in and out. The native commands do every request through the core.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = ["window", "__TAURI__", "core"], js_name = invoke, catch)]
    async fn tauri_invoke(command: &str, args: JsValue) -> Result<JsValue, JsValue>;
}

/// An error as the native side reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UiError {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for UiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

fn to_text(value: &JsValue) -> String {
    if value.is_undefined() || value.is_null() {
        return "null".into();
    }
    js_sys::JSON::stringify(value).ok().and_then(|s| s.as_string()).unwrap_or_else(|| "null".into())
}

/// Calls a native command with `args` (an object of its parameters).
pub async fn call<T: DeserializeOwned>(command: &str, args: serde_json::Value) -> Result<T, UiError> {
    let broken = |message: String| UiError { code: "bridge".into(), message };
    let args = js_sys::JSON::parse(&args.to_string()).map_err(|e| broken(to_text(&e)))?;
    match tauri_invoke(command, args).await {
        Ok(value) => serde_json::from_str(&to_text(&value)).map_err(|e| broken(e.to_string())),
        Err(error) => Err(serde_json::from_str(&to_text(&error)).unwrap_or_else(|_| broken(to_text(&error)))),
    }
}
