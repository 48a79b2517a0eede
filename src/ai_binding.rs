//! The platform seam for Workers AI's binding: `env[binding].run(model,
//! inputs, options)` called as plain JS, so that any object with a `run`
//! method works — the real `[ai]` binding in production, and under `wrangler
//! dev` (where the real one cannot run locally) a service binding to the
//! mock Worker in `tests/mock/workers-ai-binding/`, whose `run` is an RPC
//! method. `worker::Ai` is not used: it insists on the real binding's class.
//!
//! Only JSON and bytes cross this seam; translation lives in
//! `providers::workers_ai`.

use std::cell::Cell;

use js_sys::{Function, Object, Promise, Reflect, JSON};
use wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{console_error, AbortSignal, Env};

use crate::providers::BindingCall;

/// What `run()` resolved to.
pub enum RunOutput {
    /// A JSON value (a whole answer), serialized.
    Json(Vec<u8>),
    /// A `ReadableStream` of SSE bytes (`stream: true`).
    Stream(worker::web_sys::ReadableStream),
}

thread_local! {
    /// Set once a binding refused an `AbortSignal` in its options: Workers
    /// RPC cannot carry one (without an experimental flag), so a service
    /// binding standing in for the real binding is called without it.
    static SIGNAL_REFUSED: Cell<bool> = const { Cell::new(false) };
}

fn binding(env: &Env, name: &str) -> Option<JsValue> {
    let env: &JsValue = env.as_ref();
    Reflect::get(env, &JsValue::from_str(name))
        .ok()
        .filter(|b| !b.is_undefined() && !b.is_null())
}

/// Whether the Worker has a binding of that name.
pub fn present(env: &Env, name: &str) -> bool {
    binding(env, name).is_some()
}

/// The `message` of a thrown value (or its string form), for the error
/// mapping; its class name and message also go to the log.
fn error_message(e: &JsValue) -> (String, String) {
    let field = |key: &str| {
        Reflect::get(e, &JsValue::from_str(key))
            .ok()
            .and_then(|v| v.as_string())
    };
    let name = field("name").unwrap_or_default();
    let message = field("message")
        .or_else(|| e.as_string())
        .or_else(|| JSON::stringify(e).ok().and_then(|s| s.as_string()))
        .unwrap_or_default();
    (name, message)
}

/// One `run()` call; `Err` carries the thrown error's message.
async fn call(
    target: &JsValue,
    run: &Function,
    call: &BindingCall,
    inputs: &JsValue,
    signal: Option<&AbortSignal>,
) -> Result<JsValue, JsValue> {
    let options = Object::new();
    if let Some(s) = signal {
        let signal: &JsValue = s.as_ref();
        Reflect::set(&options, &JsValue::from_str("signal"), signal)?;
    }
    let args = js_sys::Array::of3(&JsValue::from_str(&call.model), inputs, options.as_ref());
    // `Reflect.apply`, not `run.call(…)`: on an RPC stub every property —
    // `call` included — names a remote method.
    let promise = Reflect::apply(run, target, &args)?;
    JsFuture::from(Promise::resolve(&promise)).await
}

fn is_data_clone_error(e: &JsValue) -> bool {
    error_message(e).0 == "DataCloneError"
}

/// Calls `run()`. `signal` aborts the call at the real binding (a timeout
/// then stops the generation); a stream is also cancelled when the gateway
/// drops it.
pub async fn run(env: &Env, bc: &BindingCall, signal: &AbortSignal) -> Result<RunOutput, String> {
    let Some(target) = binding(env, &bc.binding) else {
        return Err(format!("binding {} is not defined", bc.binding));
    };
    let Some(run) = Reflect::get(&target, &JsValue::from_str("run"))
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
    else {
        return Err(format!("binding {} has no run() method", bc.binding));
    };
    let text = serde_json::to_string(&bc.inputs).map_err(|e| e.to_string())?;
    let inputs = JSON::parse(&text).map_err(|e| error_message(&e).1)?;
    let with_signal = !SIGNAL_REFUSED.with(Cell::get);
    let mut result = call(&target, &run, bc, &inputs, with_signal.then_some(signal)).await;
    if with_signal && result.as_ref().is_err_and(is_data_clone_error) {
        // Refused before anything was sent: an RPC stand-in (see above).
        SIGNAL_REFUSED.with(|c| c.set(true));
        result = call(&target, &run, bc, &inputs, None).await;
    }
    let value = result.map_err(|e| {
        let (name, message) = error_message(&e);
        console_error!(
            "Workers AI binding {} run({}) threw {name}: {message}",
            bc.binding,
            bc.model
        );
        message
    })?;
    if let Some(stream) = value.dyn_ref::<worker::web_sys::ReadableStream>() {
        return Ok(RunOutput::Stream(stream.clone()));
    }
    let json = JSON::stringify(&value)
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| format!("run({}) resolved to a value that is not JSON", bc.model))?;
    Ok(RunOutput::Json(json.into_bytes()))
}
