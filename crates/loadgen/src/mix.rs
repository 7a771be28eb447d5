//! What the load generator sends: a weighted mix of webhooks, emails, SMS, record-only events and activity
//! logs, for a population of users with a few busy ones, with payloads of realistic and varied sizes.

use std::fmt;
use std::str::FromStr;

use herald_domain::{Channel, Lane, Priority};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

/// One kind of request in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `POST /event`, channel webhook, to the load generator's own sink.
    Webhook,
    /// `POST /event`, channel email, to whatever SMTP server the dispatchers use.
    Email,
    /// `POST /event`, channel sms (the sandbox provider on the dev stack).
    Sms,
    /// `POST /event` without a channel: stored and published, ends `RECORDED`.
    Record,
    /// `POST /api/logs`: a user's activity (send, receive, balance inquiry...), ends `RECORDED`.
    Activity,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Webhook,
        Kind::Email,
        Kind::Sms,
        Kind::Record,
        Kind::Activity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Email => "email",
            Kind::Sms => "sms",
            Kind::Record => "record",
            Kind::Activity => "activity",
        }
    }

    /// The channel the event is delivered through; `None` for record-only events.
    pub fn channel(self) -> Option<Channel> {
        match self {
            Kind::Webhook => Some(Channel::Webhook),
            Kind::Email => Some(Channel::Email),
            Kind::Sms => Some(Channel::Sms),
            Kind::Record | Kind::Activity => None,
        }
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown kind '{s}', expected one of: webhook, email, sms, record, activity"
                )
            })
    }
}

/// Weights of each kind: `webhook=70,email=5,sms=10,record=5,activity=10`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Kind, u32)>,
    total: u32,
}

impl Mix {
    /// Only `kind`.
    pub fn only(kind: Kind) -> Self {
        Self {
            weights: vec![(kind, 1)],
            total: 1,
        }
    }

    fn pick(&self, rng: &mut StdRng) -> Kind {
        let mut roll = rng.random_range(0..self.total);
        for &(kind, weight) in &self.weights {
            if roll < weight {
                return kind;
            }
            roll -= weight;
        }
        // Unreachable while the weights add up to `total`; webhook is a harmless answer anyway.
        Kind::Webhook
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut weights = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not kind=weight"))?;
            let kind: Kind = kind.trim().parse()?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|e| format!("weight of {}: {e}", kind.as_str()))?;
            if weight > 0 {
                weights.push((kind, weight));
            }
        }
        let total = weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return Err("the mix needs at least one kind with a weight above 0".into());
        }
        Ok(Self { weights, total })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(k, w)| format!("{}={w}", k.as_str()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    /// `/event` or `/api/logs`.
    pub path: &'static str,
    pub body: Value,
    /// The id the load generator chose (`/event` only; activity logs get theirs from ingest).
    pub event_id: Option<String>,
    pub lane: Lane,
}

/// Builds requests for one connection.
#[derive(Debug)]
pub struct Generator {
    pub mix: Mix,
    /// Share of `/event` requests sent as critical, 0 to 100.
    pub critical_pct: f64,
    pub n_users: u32,
    /// The run's tag, put in every event's metadata (`loadgenRun`) and in its id.
    pub run_id: String,
    /// The sink's base URL; webhooks go to `<hook_base>/<n>` where n is the failures the sink answers first.
    pub hook_base: String,
    pub sink_fail_first: u32,
    /// Prefix of this connection's event ids (unique per connection within the run).
    pub id_prefix: String,
    pub rng: StdRng,
    seq: u64,
}

const WEBHOOK_TYPES: &[&str] = &[
    "order.shipped",
    "invoice.paid",
    "payment.received",
    "subscription.renewed",
];
const EMAIL_TYPES: &[&str] = &["password.reset", "order.confirmation", "weekly.digest"];
const SMS_TYPES: &[&str] = &["otp.sent", "delivery.update"];
const RECORD_TYPES: &[&str] = &["request.failed", "login.succeeded", "session.expired"];
const ACTIVITIES: &[&str] = &[
    "money.send",
    "money.receive",
    "balance.inquiry",
    "card.freeze",
    "statement.download",
];

impl Generator {
    #[allow(clippy::too_many_arguments)] // a plain constructor of a plain record
    pub fn new(
        mix: Mix,
        critical_pct: f64,
        n_users: u32,
        run_id: &str,
        hook_base: &str,
        sink_fail_first: u32,
        id_prefix: String,
        rng: StdRng,
    ) -> Self {
        Self {
            mix,
            critical_pct,
            n_users: n_users.max(1),
            run_id: run_id.to_owned(),
            hook_base: hook_base.to_owned(),
            sink_fail_first,
            id_prefix,
            rng,
            seq: 0,
        }
    }

    /// A user id where a few users are much busier than most (the square of a uniform draw).
    fn user(&mut self) -> String {
        let u: f64 = self.rng.random();
        let n = ((u * u) * f64::from(self.n_users)) as u32;
        format!("user-{}", n.min(self.n_users - 1))
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.random_range(0..from.len())]
    }

    /// Filler of a realistic size: most payloads are small, some a few kilobytes, a few tens of kilobytes.
    fn filler(&mut self) -> String {
        let roll: f64 = self.rng.random();
        let len = if roll < 0.70 {
            self.rng.random_range(16..256)
        } else if roll < 0.95 {
            self.rng.random_range(1_024..4_096)
        } else {
            self.rng.random_range(8_192..24_576)
        };
        const WORDS: &[&str] = &[
            "order", "item", "shipped", "total", "account", "note", "herald", "delivery", "thanks",
        ];
        let mut text = String::with_capacity(len + 16);
        while text.len() < len {
            text.push_str(WORDS[self.rng.random_range(0..WORDS.len())]);
            text.push(' ');
        }
        text
    }

    /// The next request.
    pub fn next_request(&mut self) -> Request {
        self.seq += 1;
        let kind = self.mix.pick(&mut self.rng);
        let user = self.user();
        let run = self.run_id.clone();
        if kind == Kind::Activity {
            let activity = self.pick(ACTIVITIES);
            let amount = self.rng.random_range(1..100_000) as f64 / 100.0;
            let account = ["chk", "sav", "card"][self.rng.random_range(0..3)];
            let body = json!({
                "userId": user,
                "activityType": activity,
                "metadata": {
                    "loadgenRun": run,
                    "account": account,
                    "amount": amount,
                    "counterparty": format!("user-{}", self.rng.random_range(0..self.n_users)),
                    "ip": format!("10.0.{}.{}", self.rng.random_range(0..255), self.rng.random_range(1..255)),
                },
            });
            return Request {
                kind,
                path: "/api/logs",
                body,
                event_id: None,
                lane: Lane::Default,
            };
        }
        let priority = if self.rng.random::<f64>() * 100.0 < self.critical_pct {
            Priority::Critical
        } else {
            Priority::Default
        };
        let event_id = format!("{}-{}", self.id_prefix, self.seq);
        let (event_type, payload) = match kind {
            Kind::Webhook => {
                let filler = self.filler();
                let order = self.rng.random_range(1..10_000_000u64);
                (
                    self.pick(WEBHOOK_TYPES),
                    json!({
                        "url": format!("{}/{}", self.hook_base, self.sink_fail_first),
                        "body": {"orderId": order, "user": user, "note": filler},
                        "headers": {"X-Tenant": "loadgen"},
                    }),
                )
            }
            Kind::Email => {
                let filler = self.filler();
                (
                    self.pick(EMAIL_TYPES),
                    json!({
                        "to": format!("{user}@example.com"),
                        "subject": "Your order",
                        "text": filler,
                    }),
                )
            }
            Kind::Sms => {
                let code = self.rng.random_range(100_000..1_000_000u32);
                (
                    self.pick(SMS_TYPES),
                    json!({
                        "phoneNumber": format!("20255{:05}", self.rng.random_range(0..100_000u32)),
                        "message": format!("Your code is {code}"),
                    }),
                )
            }
            Kind::Record | Kind::Activity => {
                let filler = self.filler();
                (
                    self.pick(RECORD_TYPES),
                    json!({"path": "/api/orders", "status": 401, "detail": filler}),
                )
            }
        };
        let mut body = json!({
            "eventId": event_id,
            "userId": user,
            "eventType": event_type,
            "priority": priority.as_str(),
            "payload": payload,
            "metadata": {"loadgenRun": run, "source": "herald-loadgen"},
        });
        if let Some(channel) = kind.channel() {
            body["channel"] = Value::String(channel.as_str().into());
        }
        Request {
            kind,
            path: "/event",
            body,
            event_id: Some(event_id),
            lane: Lane::for_priority(priority),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_domain::request::{parse_activity, parse_event, Region, Rules};
    use rand::SeedableRng;

    #[test]
    fn a_mix_parses_and_prints() {
        let mix: Mix = "webhook=70, email=5,sms=0,activity=25"
            .parse()
            .expect("mix");
        assert_eq!(mix.to_string(), "webhook=70,email=5,activity=25");
        assert!("pigeon=1".parse::<Mix>().is_err());
        assert!("webhook=0".parse::<Mix>().is_err());
    }

    #[test]
    fn every_generated_request_is_valid() {
        let mix: Mix = "webhook=1,email=1,sms=1,record=1,activity=1"
            .parse()
            .expect("mix");
        let mut generator = Generator::new(
            mix,
            20.0,
            100,
            "run1",
            "http://127.0.0.1:9/hook",
            0,
            "lg-run1-0".into(),
            StdRng::seed_from_u64(7),
        );
        let rules = Rules {
            default_region: Region::default(),
            ..Rules::default()
        };
        for _ in 0..500 {
            let request = generator.next_request();
            let parsed = match request.path {
                "/event" => parse_event(&request.body, &rules).map(|_| ()),
                _ => parse_activity(&request.body).map(|_| ()),
            };
            assert!(parsed.is_ok(), "{:?}: {:?}", request.body, parsed);
        }
    }
}
