//! The platform side of quality sampling and of the complexity classifier
//! call (issue 12); the decisions and scores are pure (`quality.rs`,
//! `classifier.rs`).
//!
//! Both calls are gateway overhead, not the client's traffic: each gets its
//! own ledger row under a reserved key id (`gateway:quality-sample`,
//! `gateway:complexity-classifier`) with `feature` naming it and the source
//! request in the metadata, priced like any row, and never settled against
//! a virtual key's or project's budget.

use std::rc::Rc;

use serde_json::{json, Map, Value};
use wasm_bindgen::JsValue;
use worker::{console_error, D1Database, Env};

use crate::classifier::{self, ClassifierConfig, Verdict};
use crate::config::{GatewayConfig, RouteConfig};
use crate::error::GatewayError;
use crate::handlers::{price_row, proxy::side_call};
use crate::keys::KeyGrant;
use crate::ledger::{Endpoint, Outcome, RequestRow};
use crate::openai::{AssistantMessage, ChatCompletion};
use crate::quality::{self, SampleRow};
use crate::routing::{resolve, Target};

/// A ledger row for a call the gateway makes on its own account.
fn overhead_row(
    request_id: String,
    key_id: &str,
    feature: &str,
    source_request_id: &str,
    source_key_id: &str,
) -> RequestRow {
    let mut row = RequestRow::new(
        request_id,
        crate::http::now_ms(),
        key_id.to_owned(),
        Endpoint::ChatCompletions,
    );
    row.metadata = Some(
        json!({
            "feature": feature,
            "source_request_id": source_request_id,
            "source_key_id": source_key_id,
        })
        .to_string(),
    );
    row
}

/// Asks the route's classifier model for the tier, within its deadline.
/// Returns the verdict for routing and the call's ledger row (to be written
/// after the response), `None` when no call was made.
pub async fn classify(
    env: &Env,
    config: &GatewayConfig,
    c: &ClassifierConfig,
    body: &Map<String, Value>,
    request_id: &str,
    key_id: &str,
) -> (Verdict, Option<RequestRow>) {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let Some(turn) = classifier::last_user_text(messages) else {
        return (Verdict::Heuristic("no user text"), None);
    };
    let Ok(target) = resolve(config, &c.model) else {
        // Config validation makes this unreachable.
        return (Verdict::Heuristic("model error"), None);
    };
    let mut row = overhead_row(
        format!("{request_id}_classifier"),
        classifier::LEDGER_KEY,
        "complexity_classifier",
        request_id,
        key_id,
    );
    let answer = side_call(
        env,
        config,
        &target,
        classifier::request_body(&turn),
        c.deadline_ms(),
        &mut row,
    )
    .await;
    let verdict = match answer {
        Ok(completion) => match first_text(&completion).and_then(classifier::parse) {
            Some(tier) => Verdict::Model(tier),
            None => Verdict::Heuristic("model unparseable"),
        },
        Err(GatewayError::UpstreamTimeout { .. }) => Verdict::Heuristic("model timeout"),
        Err(e) => {
            console_error!("complexity classifier failed: {}", e.code());
            Verdict::Heuristic("model error")
        }
    };
    (verdict, Some(row))
}

fn first_text(c: &ChatCompletion) -> Option<&str> {
    c.choices.first()?.message.content.as_deref()
}

/// A request chosen for a quality sample, and what the reference is asked.
pub struct SamplePlan {
    route: String,
    reference: Target,
    body: Map<String, Value>,
    timeout_ms: u64,
}

/// Whether this request is sampled: its route has `quality_sampling`, the
/// roll falls in the fraction, it is a chat request, and no guardrail
/// detector (global, key or route) applies to it — traffic an operator
/// guards is never copied to a second provider.
pub fn plan_sample(
    config: &GatewayConfig,
    grant: &KeyGrant,
    requested: &str,
    route: Option<&RouteConfig>,
    endpoint: Endpoint,
    body: &Map<String, Value>,
    roll: f64,
) -> Option<SamplePlan> {
    let sampling = route?.quality_sampling.as_ref()?;
    if endpoint.canonical() != Endpoint::ChatCompletions || !sampling.sampled(roll) {
        return None;
    }
    let mut policy = config.guardrails.clone();
    if let Some(k) = &grant.guardrails {
        policy = policy.overlay(k);
    }
    if let Some(r) = route.and_then(|r| r.guardrails.as_ref()) {
        policy = policy.overlay(r);
    }
    if quality::guardrails_active(&policy) {
        return None;
    }
    Some(SamplePlan {
        route: requested.to_owned(),
        reference: resolve(config, &sampling.reference).ok()?,
        body: quality::reference_body(body),
        timeout_ms: sampling.timeout_ms(),
    })
}

/// The user's side of a sample, taken from its ledger row: `None` when the
/// request is not to be compared — not answered by a provider in full (an
/// error, a cut stream, a cache hit), or answered by the reference itself.
pub struct SampleSource {
    request_id: String,
    created_at_ms: u64,
    key_id: String,
    provider: String,
    model: String,
}

impl SampleSource {
    pub fn of(row: &RequestRow, plan: &SamplePlan) -> Option<Self> {
        if row.outcome != Outcome::Ok || matches!(row.cache_status, Some("hit" | "semantic_hit")) {
            return None;
        }
        // The link's model as configured (the provider may report a dated name).
        let link = row.attempts.iter().rev().find(|a| a.ok)?;
        if link.provider == plan.reference.provider && link.model == plan.reference.model {
            return None;
        }
        Some(Self {
            request_id: row.request_id.clone(),
            created_at_ms: row.created_at_ms,
            key_id: row.key_id.clone(),
            provider: link.provider.clone(),
            model: link.model.clone(),
        })
    }
}

/// Asks the reference, scores the agreement, writes the reference call's
/// ledger row and the `quality_samples` row. Runs in `ctx.wait_until`,
/// after the user's answer is complete.
pub async fn run_sample(
    env: Env,
    db: D1Database,
    config: Rc<GatewayConfig>,
    plan: SamplePlan,
    source: SampleSource,
    answer: AssistantMessage,
) {
    let mut row = overhead_row(
        format!("{}_quality", source.request_id),
        quality::LEDGER_KEY,
        "quality_sample",
        &source.request_id,
        &source.key_id,
    );
    let reference = side_call(
        &env,
        &config,
        &plan.reference,
        plan.body,
        plan.timeout_ms,
        &mut row,
    )
    .await;
    let (agreement, error) = match &reference {
        Ok(c) => match c.choices.first() {
            Some(choice) => (Some(quality::agreement(&answer, &choice.message)), None),
            None => (None, Some("upstream_invalid_response".to_owned())),
        },
        Err(e) => (None, Some(e.code().to_owned())),
    };
    price_row(&config, &mut row);
    let sample = SampleRow {
        request_id: source.request_id,
        created_at_ms: source.created_at_ms,
        key_id: source.key_id,
        route: plan.route,
        provider: source.provider,
        model: source.model,
        reference: plan.reference.qualified(),
        agreement,
        error,
        reference_request_id: row.request_id.clone(),
        reference_cost_micros: row.cost_micros,
        reference_latency_ms: row.latency_ms,
    };
    crate::store::commit_request_row(&db, row).await;
    insert_sample(&db, &sample).await;
}

async fn insert_sample(db: &D1Database, sample: &SampleRow) {
    let values: Vec<JsValue> = sample.bind_values().iter().map(crate::store::js).collect();
    let result = match db.prepare(quality::INSERT_SAMPLE_SQL).bind(&values) {
        Ok(s) => s.run().await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        console_error!("quality sample not recorded: {e}");
    }
}

/// Writes an overhead call's ledger row (priced; no budget is settled).
pub async fn write_overhead_row(
    db: D1Database,
    config: Option<Rc<GatewayConfig>>,
    mut row: RequestRow,
) {
    if let Some(c) = &config {
        price_row(c, &mut row);
    }
    crate::store::commit_request_row(&db, row).await;
}
