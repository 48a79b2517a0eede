//! Model addressing: which provider and which provider model a request's
//! `model` value means.
//!
//! Order: a configured alias or bare model name (`models` in config) first, then
//! `"provider/model"` split at the first slash (so OpenRouter's own
//! `"openrouter/anthropic/claude-sonnet-4.5"` works). Anything else is a 404
//! `model_not_found`, never a guess.

use serde_json::{Map, Value};

use crate::config::{GatewayConfig, RouteConfig, Strategy, TargetConfig};
use crate::error::GatewayError;

/// A resolved upstream: a configured provider name and the model id to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub provider: String,
    pub model: String,
}

impl Target {
    /// `"provider/model"`.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

pub fn resolve(config: &GatewayConfig, requested: &str) -> Result<Target, GatewayError> {
    let not_found = || GatewayError::ModelNotFound {
        model: requested.to_owned(),
    };
    let qualified = config
        .models
        .get(requested)
        .map(String::as_str)
        .unwrap_or(requested);
    let (provider, model) = qualified.split_once('/').ok_or_else(not_found)?;
    if model.is_empty() || !config.providers.contains_key(provider) {
        return Err(not_found());
    }
    Ok(Target {
        provider: provider.to_owned(),
        model: model.to_owned(),
    })
}

/// One upstream to try, with everything the walker and the adapter need.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub provider: String,
    pub model: String,
    /// Request fields this link overrides.
    pub params: Option<Map<String, Value>>,
    pub ttfb_ms: u64,
    pub idle_ms: u64,
    pub total_ms: u64,
    pub retries: u32,
    /// Non-retryable statuses that still move on to the next link.
    pub on_status_codes: Vec<u16>,
}

/// A provider model's price, as the handler looks it up (`None`: unpriced).
pub type PriceOf<'a> = &'a dyn Fn(&str, &str) -> Option<crate::pricing::Price>;

/// What routing strategies look at.
pub struct RequestFacts<'a> {
    pub metadata: Option<&'a Map<String, Value>>,
    pub body: &'a Map<String, Value>,
    /// The request body's size (the `cost` strategy's prompt estimate).
    pub body_bytes: u64,
    /// Prices for the `cost` strategy; without it every link is unpriced.
    pub price_of: Option<PriceOf<'a>>,
    /// Live latency per `provider/model` for the `latency` strategy, and the
    /// time to judge staleness by.
    pub latency_of: Option<LatencyOf<'a>>,
    pub now_ms: u64,
    /// The share of the key's tightest budget already used (the `budget`
    /// strategy); `None` when the key has no budget.
    pub budget_used: Option<f64>,
    /// The classifier model's verdict, for `complexity` routes that have a
    /// `classifier` (`None`: not asked).
    pub classified: Option<crate::classifier::Verdict>,
}

/// A link's live latency statistic by `provider/model` (`None`: unmeasured).
pub type LatencyOf<'a> = &'a dyn Fn(&str) -> Option<crate::latency::LatencyStat>;

impl<'a> RequestFacts<'a> {
    pub fn new(metadata: Option<&'a Map<String, Value>>, body: &'a Map<String, Value>) -> Self {
        Self {
            metadata,
            body,
            body_bytes: 0,
            price_of: None,
            latency_of: None,
            now_ms: 0,
            budget_used: None,
            classified: None,
        }
    }

    pub fn with_classified(mut self, verdict: Option<crate::classifier::Verdict>) -> Self {
        self.classified = verdict;
        self
    }

    pub fn with_budget_used(mut self, used: Option<f64>) -> Self {
        self.budget_used = used;
        self
    }

    pub fn with_latency(mut self, now_ms: u64, latency_of: LatencyOf<'a>) -> Self {
        self.now_ms = now_ms;
        self.latency_of = Some(latency_of);
        self
    }

    pub fn with_cost(mut self, body_bytes: u64, price_of: PriceOf<'a>) -> Self {
        self.body_bytes = body_bytes;
        self.price_of = Some(price_of);
        self
    }
}

impl RequestFacts<'_> {
    fn value(&self, key: &str) -> Option<&Value> {
        if let Some(k) = key.strip_prefix("metadata.") {
            return self.metadata?.get(k);
        }
        key.strip_prefix("params.").and_then(|k| self.body.get(k))
    }

    fn matches(&self, when: &std::collections::BTreeMap<String, Value>) -> bool {
        when.iter().all(|(k, want)| self.value(k) == Some(want))
    }
}

/// Routes nest at most this deep (cycles are rejected by config validation;
/// this bounds an inline route too).
const MAX_ROUTE_DEPTH: usize = 8;

/// The ordered links for a request's `model` (or its inline route):
/// a named route expands by its strategy; anything else is one link.
/// `random` yields numbers in [0, 1) for load balancing.
pub fn plan_links(
    config: &GatewayConfig,
    requested: &str,
    inline: Option<&RouteConfig>,
    facts: &RequestFacts<'_>,
    random: &mut dyn FnMut() -> f64,
) -> Result<Vec<Link>, GatewayError> {
    plan_route(config, requested, inline, facts, random).map(|p| p.links)
}

/// Links in order, and why (for `x-tollgate-route-decision`): smart
/// strategies say what they chose and what they left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutePlan {
    pub links: Vec<Link>,
    pub decisions: Vec<String>,
}

/// [`plan_links`] with the strategies' explanations.
pub fn plan_route(
    config: &GatewayConfig,
    requested: &str,
    inline: Option<&RouteConfig>,
    facts: &RequestFacts<'_>,
    random: &mut dyn FnMut() -> f64,
) -> Result<RoutePlan, GatewayError> {
    let mut plan = RoutePlan::default();
    match (inline, config.routes.get(requested)) {
        (Some(route), _) | (None, Some(route)) => {
            expand_route(config, route, facts, random, 0, &mut plan)?;
        }
        (None, None) => {
            let target = resolve(config, requested)?;
            plan.links
                .push(link_for(config, &target, &TargetConfig::default(), &[]));
        }
    }
    Ok(plan)
}

fn link_for(
    config: &GatewayConfig,
    target: &Target,
    t: &TargetConfig,
    route_codes: &[u16],
) -> Link {
    let d = &config.resilience;
    Link {
        provider: target.provider.clone(),
        model: target.model.clone(),
        params: t.params.clone(),
        ttfb_ms: t.ttfb_ms.unwrap_or(d.ttfb_ms),
        idle_ms: t.idle_ms.unwrap_or(d.idle_ms),
        total_ms: t.total_ms.unwrap_or(d.total_ms),
        retries: t.retries.unwrap_or(d.retries),
        on_status_codes: t
            .on_status_codes
            .clone()
            .unwrap_or_else(|| route_codes.to_vec()),
    }
}

fn expand_route(
    config: &GatewayConfig,
    route: &RouteConfig,
    facts: &RequestFacts<'_>,
    random: &mut dyn FnMut() -> f64,
    depth: usize,
    out: &mut RoutePlan,
) -> Result<(), GatewayError> {
    if depth >= MAX_ROUTE_DEPTH {
        return Err(GatewayError::invalid("Routes are nested too deeply."));
    }
    if route.strategy == Strategy::Latency {
        let mut all = RoutePlan::default();
        let fallback = RouteConfig {
            strategy: Strategy::Fallback,
            ..route.clone()
        };
        expand_route(config, &fallback, facts, random, depth + 1, &mut all)?;
        let names: Vec<String> = all
            .links
            .iter()
            .map(|l| format!("{}/{}", l.provider, l.model))
            .collect();
        let stats: Vec<_> = names
            .iter()
            .map(|n| facts.latency_of.and_then(|f| f(n)))
            .collect();
        let policy = crate::latency::LatencyPolicy {
            explore_rate: route
                .explore_rate
                .unwrap_or(crate::latency::DEFAULT_EXPLORE_RATE),
            stale_after_ms: route
                .stale_after_ms
                .unwrap_or(crate::latency::DEFAULT_STALE_AFTER_MS),
        };
        let (order, decision) = crate::latency::order(&names, &stats, facts.now_ms, policy, random);
        let mut slots: Vec<Option<Link>> = all.links.into_iter().map(Some).collect();
        out.links.extend(
            order
                .into_iter()
                .filter_map(|i| slots.get_mut(i).and_then(Option::take)),
        );
        out.decisions.extend(all.decisions);
        out.decisions.push(decision);
        return Ok(());
    }
    if route.strategy == Strategy::Cost {
        // Every target's links, then the cheapest capable first.
        let mut all = RoutePlan::default();
        let fallback = RouteConfig {
            strategy: Strategy::Fallback,
            ..route.clone()
        };
        expand_route(config, &fallback, facts, random, depth + 1, &mut all)?;
        let (links, decision) = cheapest_capable(config, all.links, facts)?;
        out.links.extend(links);
        out.decisions.extend(all.decisions);
        out.decisions.push(decision);
        return Ok(());
    }
    if route.strategy == Strategy::Complexity {
        let messages = facts
            .body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let tools = facts
            .body
            .get("tools")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty());
        let assessment = crate::complexity::assess(messages, tools);
        // A classifier model's tier wins; without one (or when it failed)
        // the heuristics decide, and the header says why.
        let verdict = route.classifier.as_ref().and(facts.classified);
        let (wanted, label) = match verdict {
            Some(crate::classifier::Verdict::Model(tier)) => (tier, format!("{tier}(model)")),
            Some(crate::classifier::Verdict::Heuristic(why)) => {
                let explained = crate::complexity::explain(&assessment);
                let base = explained.strip_suffix(')').unwrap_or(&explained);
                (assessment.tier, format!("{base};{why})"))
            }
            None => (assessment.tier, crate::complexity::explain(&assessment)),
        };
        // The assessed tier, then harder tiers (ascending), then easier ones.
        let rank = |t: &TargetConfig| {
            let tier = t.tier.unwrap_or(crate::complexity::Tier::Complex);
            match tier.cmp(&wanted) {
                std::cmp::Ordering::Equal => (0, 0),
                std::cmp::Ordering::Greater => (1, tier as i32),
                std::cmp::Ordering::Less => (2, -(tier as i32)),
            }
        };
        let mut targets: Vec<TargetConfig> = route.targets.clone();
        targets.sort_by_key(|t| rank(t));
        let ordered = RouteConfig {
            strategy: Strategy::Fallback,
            targets,
            ..route.clone()
        };
        let mut chosen = RoutePlan::default();
        expand_route(config, &ordered, facts, random, depth + 1, &mut chosen)?;
        out.decisions.extend(chosen.decisions);
        out.decisions.push(match chosen.links.first() {
            Some(l) => format!("complexity:{label} {}/{}", l.provider, l.model),
            None => format!("complexity:{label}"),
        });
        out.links.extend(chosen.links);
        return Ok(());
    }
    if route.strategy == Strategy::Budget {
        let used = facts.budget_used.unwrap_or(0.0);
        let first = route
            .targets
            .iter()
            .position(|t| t.until_used.is_none_or(|until| used < until))
            .unwrap_or(route.targets.len().saturating_sub(1));
        let tier = RouteConfig {
            strategy: Strategy::Fallback,
            targets: route.targets.iter().skip(first).cloned().collect(),
            ..route.clone()
        };
        let mut chosen = RoutePlan::default();
        expand_route(config, &tier, facts, random, depth + 1, &mut chosen)?;
        let label = match facts.budget_used {
            None => "no budget".to_owned(),
            Some(_) => format!("{}% used", (used * 100.0).round()),
        };
        out.decisions.extend(chosen.decisions);
        out.decisions.push(match chosen.links.first() {
            Some(l) => format!(
                "budget:{label} tier={} {}/{}",
                first + 1,
                l.provider,
                l.model
            ),
            None => format!("budget:{label} tier={}", first + 1),
        });
        out.links.extend(chosen.links);
        return Ok(());
    }
    let order: Vec<&TargetConfig> = match route.strategy {
        Strategy::Cost | Strategy::Latency | Strategy::Budget | Strategy::Complexity => Vec::new(),
        Strategy::Fallback => route.targets.iter().collect(),
        Strategy::Loadbalance => weighted_order(&route.targets, random),
        Strategy::Conditional => route
            .targets
            .iter()
            .find(|t| t.when.as_ref().is_none_or(|w| facts.matches(w)))
            .into_iter()
            .collect(),
    };
    for t in order {
        match (&t.model, &t.route) {
            (Some(model), _) => {
                let target = resolve(config, model)?;
                out.links
                    .push(link_for(config, &target, t, &route.on_status_codes));
            }
            (None, Some(name)) => {
                let nested = config
                    .routes
                    .get(name)
                    .ok_or_else(|| GatewayError::invalid(format!("No route named '{name}'.")))?;
                expand_route(config, nested, facts, random, depth + 1, out)?;
            }
            (None, None) => {
                return Err(GatewayError::invalid(
                    "A route target needs a model or a route.",
                ))
            }
        }
    }
    Ok(())
}

/// Whether a request for `requested` may reach a `budget` route (then the
/// handler reads the key's budget state before routing; other requests pay
/// nothing for the strategy's existence).
pub fn uses_budget_strategy(
    config: &GatewayConfig,
    requested: &str,
    inline: Option<&RouteConfig>,
) -> bool {
    fn walk(config: &GatewayConfig, route: &RouteConfig, depth: usize) -> bool {
        depth < MAX_ROUTE_DEPTH
            && (route.strategy == Strategy::Budget
                || route.targets.iter().any(|t| {
                    t.route
                        .as_ref()
                        .and_then(|r| config.routes.get(r))
                        .is_some_and(|r| walk(config, r, depth + 1))
                }))
    }
    inline
        .or_else(|| config.routes.get(requested))
        .is_some_and(|r| walk(config, r, 0))
}

/// The first `complexity` route with a `classifier` a request for
/// `requested` may reach (then the handler asks the classifier model before
/// routing; other requests pay nothing for it).
pub fn classifier_for<'a>(
    config: &'a GatewayConfig,
    requested: &str,
    inline: Option<&'a RouteConfig>,
) -> Option<&'a crate::classifier::ClassifierConfig> {
    fn walk<'a>(
        config: &'a GatewayConfig,
        route: &'a RouteConfig,
        depth: usize,
    ) -> Option<&'a crate::classifier::ClassifierConfig> {
        if depth >= MAX_ROUTE_DEPTH {
            return None;
        }
        if route.strategy == Strategy::Complexity {
            if let Some(c) = &route.classifier {
                return Some(c);
            }
        }
        route.targets.iter().find_map(|t| {
            let nested = config.routes.get(t.route.as_ref()?)?;
            walk(config, nested, depth + 1)
        })
    }
    walk(config, inline.or_else(|| config.routes.get(requested))?, 0)
}

/// The `cost` strategy: drops the links whose model cannot serve the request
/// (tools, images, JSON mode, context length — see `capabilities.rs`) and
/// orders the rest by the request's estimated cost (prompt ≈ bytes / 4,
/// output = `max_tokens` or the budgets default), unpriced links last; the
/// rest stay as fallbacks in that order. None capable → 400
/// `no_capable_model`, naming what each lacked.
fn cheapest_capable(
    config: &GatewayConfig,
    links: Vec<Link>,
    facts: &RequestFacts<'_>,
) -> Result<(Vec<Link>, String), GatewayError> {
    let needs = crate::capabilities::Needs::of(facts.body, facts.body_bytes);
    let prompt = facts.body_bytes.div_ceil(4);
    let output = needs
        .output_tokens
        .unwrap_or(config.budgets.default_max_tokens);
    let mut capable: Vec<(Option<u64>, Link)> = Vec::new();
    let mut excluded: Vec<String> = Vec::new();
    for link in links {
        let kind = config
            .providers
            .get(&link.provider)
            .map_or(link.provider.as_str(), |p| p.table_kind(&link.provider));
        let caps = crate::capabilities::lookup(&config.capabilities, kind, &link.model);
        let unmet = needs.unmet(caps);
        if !unmet.is_empty() {
            excluded.push(format!(
                "{}/{}({})",
                link.provider,
                link.model,
                unmet.join("+")
            ));
            continue;
        }
        let cost = facts
            .price_of
            .and_then(|price_of| price_of(&link.provider, &link.model))
            .map(|p| crate::pricing::worst_case_micros(&p, prompt, output));
        capable.push((cost, link));
    }
    if capable.is_empty() {
        return Err(GatewayError::InvalidRequest {
            message: format!(
                "No model of this route can serve this request: {}.",
                excluded.join(", ")
            ),
            param: Some("model".to_owned()),
            code: "no_capable_model",
        });
    }
    // Stable: equal costs keep the route's order; unpriced go last.
    capable.sort_by_key(|(cost, _)| (cost.is_none(), cost.unwrap_or(0)));
    let mut decision = String::from("cost:");
    for (i, (cost, l)) in capable.iter().enumerate() {
        if i > 0 {
            decision.push(' ');
        }
        let price = cost.map_or_else(|| "unpriced".to_owned(), |c| format!("{c}uUSD"));
        decision.push_str(&format!("{}/{}={price}", l.provider, l.model));
    }
    if !excluded.is_empty() {
        decision.push_str(&format!(" excluded={}", excluded.join(",")));
    }
    Ok((capable.into_iter().map(|(_, l)| l).collect(), decision))
}

/// Weighted random order without replacement: the first pick follows the
/// weights exactly; the rest become fallbacks in weighted order.
fn weighted_order<'a>(
    targets: &'a [TargetConfig],
    random: &mut dyn FnMut() -> f64,
) -> Vec<&'a TargetConfig> {
    let mut pool: Vec<&TargetConfig> = targets.iter().collect();
    let mut out = Vec::with_capacity(pool.len());
    while !pool.is_empty() {
        let total: f64 = pool.iter().map(|t| f64::from(t.weight.unwrap_or(1))).sum();
        let mut pick = random().clamp(0.0, 1.0) * total;
        let mut chosen = pool.len() - 1;
        for (i, t) in pool.iter().enumerate() {
            let w = f64::from(t.weight.unwrap_or(1));
            if pick < w {
                chosen = i;
                break;
            }
            pick -= w;
        }
        out.push(pool.remove(chosen));
    }
    out
}

/// Every model id `GET /v1/models` advertises: aliases, then each provider's
/// listed models as `"provider/model"`, with the provider that owns each.
pub fn listed_models(config: &GatewayConfig) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = config
        .routes
        .keys()
        .map(|name| (name.clone(), "tollgate".to_owned()))
        .collect();
    out.extend(config.models.iter().map(|(alias, target)| {
        let owner = target.split_once('/').map(|(p, _)| p).unwrap_or_default();
        (alias.clone(), owner.to_owned())
    }));
    for (name, p) in &config.providers {
        for m in &p.models {
            out.push((format!("{name}/{m}"), name.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> GatewayConfig {
        GatewayConfig::from_json(json!({
            "providers": {
                "openai": {"models": ["gpt-4o-mini"]},
                "openrouter": {},
                "demo": {"kind": "demo", "models": ["echo"]}
            },
            "models": {"gpt-4o-mini": "openai/gpt-4o-mini", "fast": "demo/echo"}
        }))
        .unwrap()
    }

    #[test]
    fn alias_then_provider_slash_model() {
        let c = config();
        assert_eq!(resolve(&c, "fast").unwrap().qualified(), "demo/echo");
        assert_eq!(
            resolve(&c, "gpt-4o-mini").unwrap().qualified(),
            "openai/gpt-4o-mini"
        );
        assert_eq!(
            resolve(&c, "openai/gpt-4.1").unwrap(),
            Target {
                provider: "openai".into(),
                model: "gpt-4.1".into()
            }
        );
        let t = resolve(&c, "openrouter/anthropic/claude-sonnet-4.5").unwrap();
        assert_eq!(t.provider, "openrouter");
        assert_eq!(t.model, "anthropic/claude-sonnet-4.5");
    }

    #[test]
    fn unknown_is_404() {
        let c = config();
        for m in ["gpt-5", "nope/model", "openai/", "/x"] {
            let e = resolve(&c, m).unwrap_err();
            assert_eq!(e.status(), 404, "{m}");
            assert_eq!(e.code(), "model_not_found");
        }
    }

    fn routed() -> GatewayConfig {
        GatewayConfig::from_json(json!({
            "providers": {"openai": {}, "groq": {}, "demo": {"kind": "demo"}},
            "models": {"mini": "openai/gpt-4o-mini"},
            "resilience": {"ttfb_ms": 5000, "retries": 2},
            "routes": {
                "smart": {"strategy": "fallback", "on_status_codes": [401], "targets": [
                    {"model": "openai/gpt-4o", "ttfb_ms": 2000, "params": {"temperature": 0}},
                    {"route": "lb"}
                ]},
                "lb": {"strategy": "loadbalance", "targets": [
                    {"model": "mini", "weight": 3}, {"model": "groq/llama", "weight": 1}
                ]},
                "plan": {"strategy": "conditional", "targets": [
                    {"model": "demo/echo", "when": {"metadata.plan": "free"}},
                    {"model": "groq/fast", "when": {"params.temperature": 0}},
                    {"route": "smart"}
                ]}
            }
        }))
        .unwrap()
    }

    fn names(links: &[Link]) -> Vec<String> {
        links
            .iter()
            .map(|l| format!("{}/{}", l.provider, l.model))
            .collect()
    }

    #[test]
    fn fallback_with_nested_loadbalance() {
        let c = routed();
        let body = Map::new();
        let facts = RequestFacts::new(None, &body);
        let mut first = || 0.1;
        let links = plan_links(&c, "smart", None, &facts, &mut first).unwrap();
        assert_eq!(
            names(&links),
            ["openai/gpt-4o", "openai/gpt-4o-mini", "groq/llama"]
        );
        assert_eq!(links[0].ttfb_ms, 2000);
        assert_eq!(links[1].ttfb_ms, 5000, "default from resilience");
        assert_eq!(links[0].retries, 2);
        assert_eq!(links[0].on_status_codes, vec![401]);
        assert_eq!(links[0].params.as_ref().unwrap()["temperature"], 0);
        let mut last = || 0.99;
        let links = plan_links(&c, "lb", None, &facts, &mut last).unwrap();
        assert_eq!(names(&links), ["groq/llama", "openai/gpt-4o-mini"]);
    }

    #[test]
    fn loadbalance_follows_the_weights() {
        let c = routed();
        let body = Map::new();
        let facts = RequestFacts::new(None, &body);
        let mut state: u64 = 42;
        let mut lcg = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut mini = 0;
        for _ in 0..10_000 {
            let links = plan_links(&c, "lb", None, &facts, &mut lcg).unwrap();
            assert_eq!(links.len(), 2);
            if links[0].provider == "openai" {
                mini += 1;
            }
        }
        assert!(
            (7_300..=7_700).contains(&mini),
            "{mini} of 10000 for weight 3:1"
        );
    }

    #[test]
    fn conditional_matches_metadata_then_params_then_default() {
        let c = routed();
        let meta = json!({"plan": "free"}).as_object().unwrap().clone();
        let body = json!({"temperature": 0}).as_object().unwrap().clone();
        let empty = Map::new();
        let mut r = || 0.0;
        let l = plan_links(
            &c,
            "plan",
            None,
            &RequestFacts::new(Some(&meta), &empty),
            &mut r,
        )
        .unwrap();
        assert_eq!(names(&l), ["demo/echo"]);
        let l = plan_links(&c, "plan", None, &RequestFacts::new(None, &body), &mut r).unwrap();
        assert_eq!(names(&l), ["groq/fast"]);
        let l = plan_links(&c, "plan", None, &RequestFacts::new(None, &empty), &mut r).unwrap();
        assert_eq!(names(&l)[0], "openai/gpt-4o");
    }

    #[test]
    fn inline_route_and_plain_models() {
        let c = routed();
        let body = Map::new();
        let facts = RequestFacts::new(None, &body);
        let mut r = || 0.0;
        let inline: RouteConfig = serde_json::from_value(json!({
            "strategy": "fallback", "targets": [{"model": "groq/a"}, {"model": "mini"}]
        }))
        .unwrap();
        let l = plan_links(&c, "ignored", Some(&inline), &facts, &mut r).unwrap();
        assert_eq!(names(&l), ["groq/a", "openai/gpt-4o-mini"]);
        let l = plan_links(&c, "openai/gpt-4.1", None, &facts, &mut r).unwrap();
        assert_eq!(names(&l), ["openai/gpt-4.1"]);
        assert_eq!(
            plan_links(&c, "nope", None, &facts, &mut r)
                .unwrap_err()
                .status(),
            404
        );
    }

    fn cost_config() -> GatewayConfig {
        GatewayConfig::from_json(json!({
            "providers": {"openai": {}, "groq": {}},
            "capabilities": {
                "groq/tiny": {"context_window": 8192, "tools": false, "vision": false, "json_mode": false}
            },
            "routes": {
                "cheap": {"strategy": "cost", "targets": [
                    {"model": "openai/gpt-4o"},
                    {"model": "openai/o3-mini"},
                    {"model": "groq/tiny"},
                    {"model": "groq/mystery"},
                    {"model": "openai/gpt-4o-mini"}
                ]}
            }
        }))
        .unwrap()
    }

    /// USD per 1M tokens (input, output) for the test models.
    fn test_price(_provider: &str, model: &str) -> Option<crate::pricing::Price> {
        let (i, o) = match model {
            "gpt-4o" => (2_500_000, 10_000_000),
            "o3-mini" => (1_100_000, 4_400_000),
            "gpt-4o-mini" => (150_000, 600_000),
            "tiny" => (50_000, 80_000),
            _ => return None,
        };
        Some(crate::pricing::Price::flat(i, o))
    }

    fn cost_plan(body: Value, bytes: u64) -> Result<RoutePlan, GatewayError> {
        let c = cost_config();
        let body = body.as_object().unwrap().clone();
        let facts = RequestFacts::new(None, &body).with_cost(bytes, &test_price);
        plan_route(&c, "cheap", None, &facts, &mut || 0.0)
    }

    #[test]
    fn cost_picks_the_cheapest_capable_link_and_keeps_the_rest_as_fallbacks() {
        // Plain text: everything can serve it; the unknown model goes last (unpriced).
        let p = cost_plan(json!({"messages": [], "max_tokens": 100}), 400).unwrap();
        assert_eq!(
            names(&p.links),
            [
                "groq/tiny",
                "openai/gpt-4o-mini",
                "openai/o3-mini",
                "openai/gpt-4o",
                "groq/mystery"
            ]
        );
        assert!(
            p.decisions[0].starts_with("cost:groq/tiny="),
            "{:?}",
            p.decisions
        );
        // Tools: tiny lacks them, mystery is unknown → both excluded, and said so.
        let p = cost_plan(
            json!({"messages": [], "tools": [{"type": "function", "function": {"name": "f"}}]}),
            400,
        )
        .unwrap();
        assert_eq!(
            names(&p.links),
            ["openai/gpt-4o-mini", "openai/o3-mini", "openai/gpt-4o"]
        );
        assert!(
            p.decisions[0].ends_with("excluded=groq/tiny(tools),groq/mystery(tools (unknown))"),
            "{:?}",
            p.decisions
        );
        // An image: o3-mini has no vision.
        let image = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]});
        let p = cost_plan(image, 400).unwrap();
        assert_eq!(names(&p.links), ["openai/gpt-4o-mini", "openai/gpt-4o"]);
        // Context: 200k tokens of prompt fits no 128k model and not tiny.
        let p = cost_plan(json!({"messages": []}), 800_000).unwrap();
        assert_eq!(names(&p.links), ["openai/o3-mini", "groq/mystery"]);
    }

    #[test]
    fn cost_with_no_capable_link_is_a_400_naming_what_each_lacked() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let e = cost_plan(
            json!({"messages": [], "tools": tools, "max_tokens": 200000}),
            10,
        )
        .unwrap_err();
        assert_eq!((e.status(), e.code()), (400, "no_capable_model"));
        assert_eq!(
            e.message(),
            "No model of this route can serve this request: \
             openai/gpt-4o(context_length+max_output_tokens), \
             openai/o3-mini(context_length+max_output_tokens), groq/tiny(tools+context_length), \
             groq/mystery(tools (unknown)), openai/gpt-4o-mini(context_length+max_output_tokens)."
        );
    }

    #[test]
    fn latency_orders_by_live_statistics() {
        let c = GatewayConfig::from_json(json!({
            "providers": {"openai": {}, "groq": {}},
            "routes": {"fast": {"strategy": "latency", "explore_rate": 0.0, "targets": [
                {"model": "openai/a", "retries": 1}, {"model": "groq/b"}
            ]}}
        }))
        .unwrap();
        let body = Map::new();
        let stat = |ms: f64| crate::latency::LatencyStat {
            ewma_ms: ms,
            samples: 4,
            updated_at_ms: 1_000,
        };
        let latency_of = |q: &str| match q {
            "openai/a" => Some(stat(400.0)),
            "groq/b" => Some(stat(30.0)),
            _ => None,
        };
        let facts = RequestFacts::new(None, &body).with_latency(2_000, &latency_of);
        let p = plan_route(&c, "fast", None, &facts, &mut || 0.5).unwrap();
        assert_eq!(names(&p.links), ["groq/b", "openai/a"]);
        assert_eq!(p.links[1].retries, 1, "links keep their target settings");
        assert_eq!(p.decisions, ["latency:fastest groq/b=30ms openai/a=400ms"]);
        // Nothing measured yet: route order, each to be measured.
        let none = |_: &str| None;
        let facts = RequestFacts::new(None, &body).with_latency(2_000, &none);
        let p = plan_route(&c, "fast", None, &facts, &mut || 0.5).unwrap();
        assert_eq!(names(&p.links), ["openai/a", "groq/b"]);
        let bad = GatewayConfig::from_json(json!({
            "providers": {"openai": {}},
            "routes": {"f": {"strategy": "fallback", "explore_rate": 0.5, "targets": [{"model": "openai/a"}]}}
        }));
        assert!(bad.is_err());
    }

    #[test]
    fn budget_tiers_move_to_cheaper_targets_as_the_budget_is_used() {
        let c = GatewayConfig::from_json(json!({
            "providers": {"openai": {}, "groq": {}},
            "routes": {
                "thrifty": {"strategy": "budget", "targets": [
                    {"model": "openai/gpt-4o", "until_used": 0.5},
                    {"model": "openai/gpt-4o-mini", "until_used": 0.9},
                    {"model": "groq/llama"}
                ]},
                "outer": {"strategy": "fallback", "targets": [{"route": "thrifty"}]}
            }
        }))
        .unwrap();
        let body = Map::new();
        let plan = |used: Option<f64>| {
            let facts = RequestFacts::new(None, &body).with_budget_used(used);
            plan_route(&c, "thrifty", None, &facts, &mut || 0.0).unwrap()
        };
        let p = plan(None);
        assert_eq!(
            names(&p.links),
            ["openai/gpt-4o", "openai/gpt-4o-mini", "groq/llama"]
        );
        assert_eq!(p.decisions, ["budget:no budget tier=1 openai/gpt-4o"]);
        assert_eq!(
            names(&plan(Some(0.49)).links),
            ["openai/gpt-4o", "openai/gpt-4o-mini", "groq/llama"]
        );
        let p = plan(Some(0.5));
        assert_eq!(names(&p.links), ["openai/gpt-4o-mini", "groq/llama"]);
        assert_eq!(p.decisions, ["budget:50% used tier=2 openai/gpt-4o-mini"]);
        assert_eq!(names(&plan(Some(0.95)).links), ["groq/llama"]);
        assert_eq!(names(&plan(Some(3.0)).links), ["groq/llama"]);
        assert!(uses_budget_strategy(&c, "thrifty", None));
        assert!(uses_budget_strategy(&c, "outer", None));
        assert!(!uses_budget_strategy(&c, "openai/gpt-4o", None));
        let bad = GatewayConfig::from_json(json!({
            "providers": {"openai": {}},
            "routes": {"f": {"strategy": "fallback", "targets": [{"model": "openai/a", "until_used": 0.5}]}}
        }));
        assert!(bad.is_err());
    }

    #[test]
    fn complexity_sends_each_tier_to_its_targets_harder_tiers_as_fallbacks() {
        let c = GatewayConfig::from_json(json!({
            "providers": {"openai": {}},
            "routes": {"tiered": {"strategy": "complexity", "targets": [
                {"model": "openai/frontier", "tier": "complex"},
                {"model": "openai/small", "tier": "simple"},
                {"model": "openai/mid", "tier": "moderate"}
            ]}}
        }))
        .unwrap();
        let plan = |text: &str| {
            let body = json!({"messages": [{"role": "user", "content": text}]})
                .as_object()
                .unwrap()
                .clone();
            let facts = RequestFacts::new(None, &body);
            plan_route(&c, "tiered", None, &facts, &mut || 0.0).unwrap()
        };
        let p = plan("Translate 'good morning' to French.");
        assert_eq!(
            names(&p.links),
            ["openai/small", "openai/mid", "openai/frontier"]
        );
        assert!(
            p.decisions[0].starts_with("complexity:simple(score="),
            "{:?}",
            p.decisions
        );
        assert!(
            p.decisions[0].ends_with(" openai/small"),
            "{:?}",
            p.decisions
        );
        let hard = "Design a distributed rate limiter for a multi-region API gateway. First, \
            analyze the trade-offs between token bucket and sliding window algorithms; then \
            explain step by step how you would keep the counters consistent across regions, \
            prove that your scheme never admits more than the limit, and compare its latency \
            and cost against a centralized Redis design.";
        let p = plan(hard);
        assert_eq!(
            names(&p.links),
            ["openai/frontier", "openai/mid", "openai/small"]
        );
        assert!(
            p.decisions[0].starts_with("complexity:complex("),
            "{:?}",
            p.decisions
        );
        let bad = GatewayConfig::from_json(json!({
            "providers": {"openai": {}},
            "routes": {"t": {"strategy": "complexity", "targets": [{"model": "openai/a"}]}}
        }));
        assert!(bad.is_err(), "a complexity target needs a tier");
    }

    #[test]
    fn a_classifier_verdict_overrides_the_heuristics_and_says_so() {
        let c = GatewayConfig::from_json(json!({
            "providers": {"openai": {}},
            "routes": {
                "tiered": {"strategy": "complexity",
                    "classifier": {"model": "openai/judge", "deadline_ms": 200},
                    "targets": [
                        {"model": "openai/small", "tier": "simple"},
                        {"model": "openai/frontier", "tier": "complex"}
                    ]},
                "outer": {"strategy": "fallback", "targets": [{"route": "tiered"}]},
                "plain": {"strategy": "complexity", "targets": [
                    {"model": "openai/small", "tier": "simple"}
                ]}
            }
        }))
        .unwrap();
        let body = json!({"messages": [{"role": "user", "content": "Translate 'hi' to French."}]})
            .as_object()
            .unwrap()
            .clone();
        let plan = |v: Option<crate::classifier::Verdict>| {
            let facts = RequestFacts::new(None, &body).with_classified(v);
            plan_route(&c, "tiered", None, &facts, &mut || 0.0).unwrap()
        };
        let p = plan(Some(crate::classifier::Verdict::Model(
            crate::complexity::Tier::Complex,
        )));
        assert_eq!(names(&p.links), ["openai/frontier", "openai/small"]);
        assert_eq!(p.decisions, ["complexity:complex(model) openai/frontier"]);
        let p = plan(Some(crate::classifier::Verdict::Heuristic("model timeout")));
        assert_eq!(names(&p.links), ["openai/small", "openai/frontier"]);
        assert!(
            p.decisions[0].starts_with("complexity:simple(score=")
                && p.decisions[0].ends_with(";model timeout) openai/small"),
            "{:?}",
            p.decisions
        );
        let p = plan(None);
        assert!(!p.decisions[0].contains("model"), "{:?}", p.decisions);
        assert_eq!(
            classifier_for(&c, "outer", None).map(|k| k.model.as_str()),
            Some("openai/judge")
        );
        assert!(classifier_for(&c, "plain", None).is_none());
        assert!(classifier_for(&c, "openai/small", None).is_none());
        for bad in [
            json!({"strategy": "fallback", "classifier": {"model": "openai/j"},
                "targets": [{"model": "openai/a"}]}),
            json!({"strategy": "complexity", "classifier": {"model": "nope/j"},
                "targets": [{"model": "openai/a", "tier": "simple"}]}),
            json!({"strategy": "complexity", "classifier": {"model": "openai/j", "deadline_ms": 0},
                "targets": [{"model": "openai/a", "tier": "simple"}]}),
            json!({"strategy": "fallback", "targets": [{"model": "openai/a"}],
                "quality_sampling": {"fraction": 2, "reference": "openai/gpt-4o"}}),
            json!({"strategy": "fallback", "targets": [{"model": "openai/a"}],
                "quality_sampling": {"fraction": 0.5, "reference": "gpt-4o"}}),
        ] {
            let cfg = GatewayConfig::from_json(json!({
                "providers": {"openai": {}}, "routes": {"r": bad.clone()}
            }));
            assert!(cfg.is_err(), "{bad}");
        }
        assert!(GatewayConfig::from_json(json!({
            "providers": {"openai": {}}, "models": {"ref": "openai/gpt-4o"},
            "routes": {"r": {"strategy": "fallback", "targets": [{"model": "openai/a"}],
                "quality_sampling": {"fraction": 0.5, "reference": "ref"}}}
        }))
        .is_ok());
    }

    #[test]
    fn listing_has_aliases_and_provider_models() {
        let ids: Vec<String> = listed_models(&config())
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            ids,
            vec!["fast", "gpt-4o-mini", "demo/echo", "openai/gpt-4o-mini"]
        );
    }
}
