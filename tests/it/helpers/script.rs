//! A wiremock responder that answers from a script and records when each request arrived.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// One received request.
#[derive(Clone, Debug)]
pub struct Hit {
    pub at: Instant,
    pub id: String,
    pub body: Value,
    pub raw: Vec<u8>,
    pub status: u16,
    pub request: Request,
}

/// A scripted answer: a status plus the template that produces it.
#[derive(Clone)]
pub struct R {
    pub status: u16,
    pub template: ResponseTemplate,
}

/// An answer with `status`.
pub fn r(status: u16) -> R {
    R {
        status,
        template: ResponseTemplate::new(status),
    }
}

impl R {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> R {
        self.template = self.template.insert_header(name, value);
        self
    }

    /// Sets the answer's body.
    pub fn body(mut self, text: &str) -> R {
        self.template = self.template.set_body_string(text);
        self
    }

    /// Delays the answer.
    pub fn delay(mut self, d: Duration) -> R {
        self.template = self.template.set_delay(d);
        self
    }
}

#[derive(Clone)]
struct Script {
    queue: Arc<Mutex<VecDeque<R>>>,
    fallback: R,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Respond for Script {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let reply = self
            .queue
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.fallback.clone());
        let hit = Hit {
            at: Instant::now(),
            id: super::header(request, "webhook-id"),
            body: serde_json::from_slice(&request.body).unwrap_or(Value::Null),
            raw: request.body.clone(),
            status: reply.status,
            request: request.clone(),
        };
        self.hits.lock().unwrap().push(hit);
        reply.template
    }
}

/// A receiver that answers `first` in order, then `fallback` forever.
pub struct Scripted {
    pub server: MockServer,
    script: Script,
}

impl Scripted {
    pub async fn start(first: Vec<R>, fallback: R) -> Scripted {
        let server = MockServer::start().await;
        let script = Script {
            queue: Arc::new(Mutex::new(first.into())),
            fallback,
            hits: Arc::new(Mutex::new(Vec::new())),
        };
        Mock::given(method("POST"))
            .respond_with(script.clone())
            .mount(&server)
            .await;
        Scripted { server, script }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.script.hits.lock().unwrap().clone()
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub async fn wait_hits(&self, n: usize, timeout: Duration) {
        super::wait_until(timeout, &format!("{n} deliveries"), || async {
            self.hits().len() >= n
        })
        .await;
    }
}
