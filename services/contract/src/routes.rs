//! What the ingress, the gateway and `helpdesk up` route where: the public and internal routes
//! and the paths no edge serves.

use crate::{Service, http};

/// A path (prefix, or exact) and the service that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub path: &'static str,
    /// Only this path, not the ones below it.
    pub exact: bool,
    pub service: Service,
    /// Stable short name (e.g. the suffix of an OpenShift Route's name).
    pub name: &'static str,
}

impl Route {
    /// Whether the route answers `path`: the path itself, or (for a prefix) a path below it,
    /// element-wise as an Ingress `Prefix` path (`/auth` matches `/auth/login`, not `/authx`).
    pub fn matches(&self, path: &str) -> bool {
        path == self.path
            || (!self.exact
                && path
                    .strip_prefix(self.path)
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

const fn route(path: &'static str, service: Service, name: &'static str) -> Route {
    Route {
        path,
        exact: false,
        service,
        name,
    }
}

/// The public entry point's path table: the cluster's Ingress (or Routes), `helpdesk up` and the
/// gateway route exactly these. A frontend, when there is one, takes `/` (everything else).
pub const PUBLIC_ROUTES: &[Route] = &[
    route("/auth", Service::User, "auth"),
    route("/.well-known", Service::User, "well-known"),
    route("/tickets", Service::Ticket, "tickets"),
    route("/admin", Service::Admin, "admin"),
    route("/audit", Service::Audit, "audit"),
    // "internal or ADMIN": the rest of /notifications is internal.
    route(
        "/notifications/status",
        Service::Notification,
        "notifications-status",
    ),
    route(http::DOCS_PATH, Service::User, "api-docs"),
    Route {
        path: http::OPENAPI_PATH,
        exact: true,
        service: Service::User,
        name: "openapi",
    },
];

/// Service-to-service prefixes: never on the public entry point.
pub const INTERNAL_ROUTES: &[Route] = &[
    route("/users", Service::User, "users"),
    route("/notifications", Service::Notification, "notifications"),
];

/// Service-to-service routes below a public prefix: the public entry point of `helpdesk up` and
/// the gateway refuse them (the cluster's Ingress cannot exclude a sub-path; there they stay
/// behind their service credential).
pub const INTERNAL_PATHS: &[&str] = &["/auth/validate", "/audit/log"];

/// Whether `path` is an internal route below a public prefix.
pub fn is_internal_path(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    INTERNAL_PATHS.contains(&path)
}

/// The route of `routes` that answers `path` (the longest match, as an Ingress picks).
pub fn route_for<'a>(routes: &'a [Route], path: &str) -> Option<&'a Route> {
    routes
        .iter()
        .filter(|r| r.matches(path))
        .max_by_key(|r| r.path.len())
}

/// The public route for `path`, `None` for internal paths and paths no service answers.
pub fn public_route(path: &str) -> Option<&'static Route> {
    if is_internal_path(path) {
        return None;
    }
    route_for(PUBLIC_ROUTES, path)
}
