//! An in-memory Kubernetes API server for reconcile tests: it stores objects, answers
//! discovery, GET/LIST (with label selectors), server-side apply, POST, PUT and DELETE like the
//! real one (resourceVersion, uid, generation, status subresource), records every request, and
//! can be told to fail.
//!
//! This file holds the fake's handle and what tests do with it (store, edit, inspect, inject
//! failures); `server` answers the requests as the API server would.

mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::{Client, client::Body};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
}

impl Recorded {
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    served: BTreeSet<String>,
    failures: Vec<(String, String, u16)>,
    rv: u64,
    uid: u64,
    simulate: bool,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": if code < 400 {"Success"} else {"Failure"},
           "message": message, "reason": reason, "code": code})
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn client(&self) -> Client {
        let fake = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.handle(req).await) }
        });
        Client::new(svc, "default")
    }

    /// Acts like the cluster's own controllers: applied Jobs succeed and applied Deployments and
    /// StatefulSets are rolled out at once (for end-to-end runs of the real controller).
    pub fn simulate_controllers(&self) {
        self.state.lock().unwrap().simulate = true;
    }

    /// Handles one HTTP request (for serving this fake over a real socket).
    pub async fn serve(&self, req: Request<Body>) -> Response<Body> {
        self.handle(req).await
    }

    /// Makes discovery report an optional API group/version (e.g. `route.openshift.io/v1`).
    pub fn serve_api(&self, group_version: &str) {
        self.state
            .lock()
            .unwrap()
            .served
            .insert(group_version.into());
    }

    /// The next request with this method whose path contains `path_part` fails with `code`.
    pub fn fail_next(&self, method: &str, path_part: &str, code: u16) {
        self.state
            .lock()
            .unwrap()
            .failures
            .push((method.into(), path_part.into(), code));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_write)
            .collect()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    /// Stores an object as a client would have created it.
    pub fn put(&self, path: &str, mut obj: Value) {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        s.uid += 1;
        obj["metadata"]["resourceVersion"] = s.rv.to_string().into();
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = format!("uid-{}", s.uid).into();
        }
        if obj["metadata"]["generation"].is_null() {
            obj["metadata"]["generation"] = 1.into();
        }
        s.objects.insert(path.into(), obj);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Changes an object the way another actor would (spec edit bumps generation).
    pub fn edit(&self, path: &str, f: impl FnOnce(&mut Value)) {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        let obj = s
            .objects
            .get_mut(path)
            .unwrap_or_else(|| panic!("no object {path}"));
        let spec_before = obj["spec"].clone();
        f(obj);
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        if obj["spec"] != spec_before {
            let g = obj["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            obj["metadata"]["generation"] = g.into();
        }
    }

    /// Acts like the garbage collector after the owner with this uid was deleted: removes every
    /// object whose owner references name it. Returns the paths removed.
    pub fn collect_garbage(&self, owner_uid: &str) -> Vec<String> {
        let mut s = self.state.lock().unwrap();
        let gone: Vec<String> = s
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["uid"] == owner_uid)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            s.objects.remove(k);
        }
        gone
    }

    /// Removes an object (as `kubectl delete` would, without cascading).
    pub fn remove(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.remove(path)
    }

    /// Paths of stored objects in a collection, e.g. `/apis/apps/v1/namespaces/ns/deployments`.
    pub fn names(&self, collection: &str) -> Vec<String> {
        let prefix = format!("{collection}/");
        self.state
            .lock()
            .unwrap()
            .objects
            .keys()
            .filter(|k| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .map(|k| k[prefix.len()..].to_string())
            .collect()
    }

    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let bytes = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let mut s = self.state.lock().unwrap();
        s.requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        if let Some(i) = s
            .failures
            .iter()
            .position(|(m, p, _)| *m == method && path.contains(p.as_str()))
        {
            let (_, _, code) = s.failures.remove(i);
            let reason = match code {
                403 => "Forbidden",
                404 => "NotFound",
                409 => "Conflict",
                422 => "Invalid",
                503 => "ServiceUnavailable",
                _ => "InternalError",
            };
            return reply(code, status(code, reason, "injected failure"));
        }
        let (code, value) = s.route(&method, &path, &query, body);
        reply(code, value)
    }
}

fn reply(code: u16, v: Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&v).unwrap()))
        .unwrap()
}
