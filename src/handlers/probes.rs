//! Health probes (`[vars.GATEWAY.health]`, decisions in `health.rs`), run by
//! the cron trigger, and `GET /admin/health`, which shows what they found
//! and cost.
//!
//! A probe is one tiny chat completion (one short user message,
//! `max_tokens` 1 by default) sent to the provider through the same adapter,
//! URL and secret as user traffic — the provider's own key, nothing else —
//! under `health.timeout_ms` for the whole answer. Before it runs, the
//! link's `CircuitBreaker` object grants its slot (one probe per link and
//! slot whatever the number of cron runs); after it, the outcome goes to the
//! same object, which moves the circuit and the link's latency, and the
//! answer updates this isolate's view at once. Nothing here is logged but
//! link names, counts, statuses and failure labels.

use std::time::Duration;

use serde_json::{json, Value};
use worker::{console_log, AbortController, Delay, Env, Response};

use crate::error::GatewayError;
use crate::handlers::proxy::within;
use crate::handlers::{circuits, config, secret};
use crate::health::{self, ProbeOutcome};
use crate::http::{json_response, now_ms};
use crate::ledger::Endpoint;
use crate::providers::{plan, translate_response, Plan};
use crate::routing::Target;

/// Largest probe answer read (a one-token answer is a few hundred bytes).
const MAX_PROBE_BODY: u64 = 256 * 1024;

/// The probes of one cron run scheduled at `scheduled_ms` by `cron` (its
/// expression tells how long until the next run: shorter intervals are
/// spaced inside this run). Does nothing when probes are off.
pub async fn run(env: &Env, scheduled_ms: u64, cron: &str) {
    // A misconfigured gateway is reported by the rest of the cron run.
    let Ok(config) = config(env) else {
        return;
    };
    let h = &config.health;
    if !h.enabled() {
        return;
    }
    let links = health::probe_links(&config);
    if links.is_empty() {
        console_log!(
            "{}",
            json!({"level": "warn", "event": "health_probes", "message": "probes are on but no link to probe (no route target, no health.links)"})
        );
        return;
    }
    let interval = h.interval_ms();
    let times = health::probe_times(scheduled_ms, health::cron_period_ms(cron), interval);
    let started = now_ms();
    for t in times {
        let due = started.saturating_add(t.saturating_sub(scheduled_ms));
        let wait = due.saturating_sub(now_ms());
        if wait > 0 {
            Delay::from(Duration::from_millis(wait)).await;
        }
        let slot = health::slot_ms(t, interval);
        let outcomes = futures::future::join_all(
            links
                .iter()
                .map(|(p, m)| probe_link(env, &config, p, m, slot)),
        )
        .await;
        let mut probed = 0u32;
        let mut cost = 0u64;
        let mut tokens = 0u64;
        let mut failing = Vec::new();
        for ((p, m), o) in links.iter().zip(&outcomes) {
            let Some(o) = o else { continue };
            probed += 1;
            cost = cost.saturating_add(o.cost_micros.unwrap_or(0));
            tokens = tokens.saturating_add(o.prompt_tokens + o.completion_tokens);
            if !o.healthy || o.failure.is_some() {
                failing.push(format!(
                    "{p}/{m}:{}",
                    o.failure.as_deref().unwrap_or("unknown")
                ));
            }
        }
        console_log!(
            "{}",
            json!({"level": "info", "event": "health_probes", "slot_ms": slot,
                   "links": links.len(), "probed": probed,
                   "skipped": links.len() as u64 - u64::from(probed),
                   "failing": failing, "tokens": tokens, "cost_micros": cost})
        );
    }
}

/// Claims the slot, probes, reports; `None` when another run has the slot
/// (or the provider has no key: nothing was sent).
async fn probe_link(
    env: &Env,
    config: &crate::config::GatewayConfig,
    provider: &str,
    model: &str,
    slot: u64,
) -> Option<ProbeOutcome> {
    let qualified = format!("{provider}/{model}");
    if !circuits::claim_probe(env, &qualified, slot).await {
        return None;
    }
    let outcome = probe(env, config, provider, model).await?;
    let now = now_ms();
    let h = &config.health;
    let breaker = config.resilience.breaker_policy();
    let report = json!({
        "healthy": outcome.healthy,
        // Only a whole answer measures the link (like a user attempt's).
        "latency_ms": (outcome.healthy && outcome.failure.is_none()).then_some(outcome.latency_ms),
        "now_ms": now,
        "failures_to_open": breaker.failures_to_open,
        "cool_down_ms": breaker.cool_down_ms,
        "probe": {
            "failures_to_open": h.failures_to_open,
            "window": h.window,
            "max_error_rate": h.max_error_rate,
            "hold_ms": h.hold_ms(),
            "outcome": outcome,
        },
    });
    circuits::report_probe(env, &qualified, &report, now).await;
    Some(outcome)
}

/// One probe request. `None` when nothing could be sent (no key for the
/// provider, or a provider kind probes do not cover).
async fn probe(
    env: &Env,
    config: &crate::config::GatewayConfig,
    provider: &str,
    model: &str,
) -> Option<ProbeOutcome> {
    let h = &config.health;
    let target = Target {
        provider: provider.to_owned(),
        model: model.to_owned(),
    };
    let started = now_ms();
    let failed = |label: String, healthy: bool| ProbeOutcome {
        healthy,
        latency_ms: now_ms().saturating_sub(started),
        failure: Some(label),
        ..ProbeOutcome::default()
    };
    let planned = plan(
        config,
        &target,
        Endpoint::ChatCompletions,
        h.probe_body(model),
        false,
        |name| secret(env, name),
        started,
    );
    let call = match planned {
        Ok(Plan::Http(call)) => call,
        Ok(_) | Err(GatewayError::ProviderNotConfigured { .. }) => return None,
        // The adapter refused the probe itself (e.g. a parameter the model
        // does not take): the provider is not at fault.
        Err(e) => return Some(failed(e.code().to_owned(), true)),
    };
    let controller = AbortController::default();
    let signal = controller.signal();
    let answer = within(h.timeout_ms, async {
        let resp = crate::upstream::send(&call, &signal).await?;
        let status = resp.status_code();
        let body = resp.read_limited(MAX_PROBE_BODY, &call.provider).await?;
        Ok::<_, GatewayError>((status, body))
    })
    .await;
    let (status, body) = match answer {
        None => {
            controller.abort();
            return Some(failed("timeout".to_owned(), false));
        }
        Some(Err(e)) => return Some(failed(e.code().to_owned(), false)),
        Some(Ok(a)) => a,
    };
    let latency_ms = now_ms().saturating_sub(started);
    if !(200..300).contains(&status) {
        return Some(failed(
            format!("status_{status}"),
            circuits::client_error(status),
        ));
    }
    let Ok((_, value)) = translate_response(&call, Endpoint::ChatCompletions, body, "probe", 0)
    else {
        return Some(failed("invalid_response".to_owned(), false));
    };
    let usage = crate::usage::usage_from_response(&value);
    let cost_micros = match (
        crate::handlers::lookup_price(config, provider, model),
        &usage,
    ) {
        (Some((price, _)), Some(u)) => Some(crate::pricing::cost_micros(&price, u)),
        // No usage reported: the one token asked for, and the prompt's bytes.
        (Some((price, _)), None) => Some(crate::pricing::cost_micros(
            &price,
            &crate::usage::Usage {
                prompt_tokens: h.prompt.len() as u64 + 16,
                completion_tokens: u64::from(h.max_tokens),
                total_tokens: 0,
                cached_prompt_tokens: None,
                reasoning_tokens: None,
            },
        )),
        (None, _) => None,
    };
    Some(ProbeOutcome {
        healthy: true,
        latency_ms,
        prompt_tokens: usage.as_ref().map_or(0, |u| u.prompt_tokens),
        completion_tokens: usage.as_ref().map_or(0, |u| u.completion_tokens),
        cost_micros,
        failure: None,
    })
}

/// `GET /admin/health`: the probe settings, and for each link probes cover
/// its circuit, latency and what its probes did and cost (kept by the link's
/// `CircuitBreaker` object since its first probe).
pub async fn admin_health(env: &Env) -> Result<Response, GatewayError> {
    let config = config(env)?;
    let h = &config.health;
    let links = health::probe_links(&config);
    let now = now_ms();
    let mut out = Vec::new();
    for (p, m) in &links {
        let qualified = format!("{p}/{m}");
        let state = circuits::shared_state(env, &qualified)
            .await
            .unwrap_or(Value::Null);
        let open_until = state
            .get("open_until_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let circuit = match open_until {
            0 => "closed",
            t if now < t => "open",
            _ => "half_open",
        };
        out.push(json!({
            "link": qualified,
            "circuit": circuit,
            "open_until_ms": (open_until > 0).then_some(open_until),
            "consecutive_failures": state.get("consecutive_failures"),
            "latency_ms": state.get("latency").and_then(|l| l.get("ewma_ms")),
            "probe": state.get("probe"),
        }));
    }
    json_response(
        &json!({
            "probe_interval_secs": h.probe_interval_secs,
            "probes_per_day": health::daily_probes(links.len(), h.probe_interval_secs),
            "links": out,
        }),
        200,
    )
}
