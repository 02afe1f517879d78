"""Prometheus metrics for the gateway, on a registry of its own (one per app, so tests can run several).

    distillery_requests_total{api, status}            requests answered, by API and HTTP status
    distillery_steps_total{tier}                      routed steps, by the tier that answered
    distillery_escalations_total{tier}                proposals rejected at a tier (passed up the cascade)
    distillery_proposals_total{tier}                  proposals scored against a threshold at a tier
    distillery_confidence{tier}                       histogram of those proposals' confidences
    distillery_calibrated_escalation_rate{tier}       the share of proposals calibration predicted to escalate
    distillery_fallback_failures_total                steps kept at a lower tier because the fallback failed
    distillery_request_latency_seconds{api}           time to the routing decision (= first byte)
    distillery_tokens_total{tier, kind}               input / output tokens of every model call, by tier
    distillery_cost_usd_total{tier}                   dollars of every model call, by tier
    distillery_capture_total{result}                  exchanges captured: written / dropped / failed
    distillery_in_flight_requests                     requests being answered now
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from distillery.serve.backend import RoutedTurn

# Confidence buckets: even steps, and the region near 1 where a trained student's confidences crowd.
CONFIDENCE_BUCKETS = (*[i / 20 for i in range(1, 20)], 0.99, 0.999, 1.0)
# Routing on a local student takes milliseconds; a hosted teacher takes seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class GatewayMetrics:
    def __init__(self, tier_names: list[str]):
        self.registry = CollectorRegistry()
        self.tier_names = tier_names
        r = self.registry
        self.requests = Counter("distillery_requests", "Requests answered, by API and HTTP status.", ["api", "status"], registry=r)
        self.steps = Counter("distillery_steps", "Routed steps, by the tier that answered.", ["tier"], registry=r)
        self.escalations = Counter("distillery_escalations", "Proposals rejected at a tier and passed up the cascade.",
                                   ["tier"], registry=r)
        self.fallback_failures = Counter("distillery_fallback_failures",
                                         "Steps kept at a lower tier because the fallback failed.", registry=r)
        self.latency = Histogram("distillery_request_latency_seconds",
                                 "Seconds from request to routing decision (the first byte of the answer).",
                                 ["api"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("distillery_tokens", "Tokens of every model call, by tier.", ["tier", "kind"], registry=r)
        self.cost = Counter("distillery_cost_usd", "Dollars of every model call (prices.toml), by tier.", ["tier"], registry=r)
        self.capture = Counter("distillery_capture", "Exchanges for the trajectory store: written, dropped (queue full), failed.",
                               ["result"], registry=r)
        self.in_flight = Gauge("distillery_in_flight_requests", "Requests being answered now.", registry=r)
        # Drift: the live escalation rate is escalations / proposals per tier; calibration's prediction
        # sits beside it, so an alert can fire when live traffic leaves the calibrated band.
        self.proposals = Counter("distillery_proposals", "Proposals scored against a threshold, by tier.", ["tier"],
                                 registry=r)
        self.confidence = Histogram("distillery_confidence", "Confidence of every proposal scored against a threshold.",
                                    ["tier"], buckets=CONFIDENCE_BUCKETS, registry=r)
        self.calibrated_rate = Gauge("distillery_calibrated_escalation_rate",
                                     "Share of a tier's proposals that calibration predicted to escalate.", ["tier"],
                                     registry=r)
        for tier in tier_names:  # so every series exists (at 0) from the start
            self.steps.labels(tier)
            self.escalations.labels(tier)
            self.cost.labels(tier)
            self.proposals.labels(tier)

    def set_calibration(self, calibration: dict) -> None:
        """Publish calibration's predicted escalation rate for the first tier (what it predicts)."""
        predicted = (calibration or {}).get("predicted_step_escalation_rate")
        if predicted is not None and self.tier_names:
            self.calibrated_rate.labels(self.tier_names[0]).set(float(predicted))

    def observe_step(self, routed: RoutedTurn) -> None:
        self.steps.labels(routed.tier).inc()
        record = routed.routing
        if record is None:  # a backend without a routing record: count the turn itself
            calls = [(routed.tier, routed.turn.usage, routed.cost_usd)]
        else:
            for entry in record.confidences:
                if entry.confidence is not None and entry.threshold is not None:
                    self.proposals.labels(entry.model).inc()
                    self.confidence.labels(entry.model).observe(entry.confidence)
            for rejected in record.rejected:
                self.escalations.labels(rejected.model).inc()
            if record.fallback_failed is not None:
                self.fallback_failures.inc()
            calls = [(call.model, call.usage, call.cost_usd) for call in record.calls]
        for tier, usage, cost in calls:
            self.tokens.labels(tier, "input").inc(usage.input_tokens)
            self.tokens.labels(tier, "output").inc(usage.output_tokens)
            self.cost.labels(tier).inc(cost)

    def render(self) -> bytes:
        return generate_latest(self.registry)
