//! Re-applying the credential Secret's password to a managed datastore whose data already exists.
//!
//! The official images read `POSTGRES_PASSWORD` / `RABBITMQ_DEFAULT_PASS` only when they initialise
//! an empty volume. A Secret rotated by an admin, or one kept from an earlier platform next to a
//! volume initialised with another password, would leave the datastore refusing the services. So
//! every start of the datastore pod sets the user's password from the Secret again (through the
//! local socket / the node's CLI, never over the network), and a hash of the credentials on the
//! pod template restarts the pod (and the services, whose URLs change) when the Secret changes.

use k8s_openapi::api::core::v1::{Container, ExecAction, Lifecycle, LifecycleHandler};

use super::content_hash;
use crate::material::{Credentials, RabbitCredentials};

/// On datastore and service pod templates: a hash of the managed datastores' credentials.
pub const DATASTORE_CREDENTIALS_ANNOTATION: &str = "helpdesk.dev/datastore-credentials-hash";

/// Sets `POSTGRES_USER`'s password to `POSTGRES_PASSWORD` in the existing cluster at `$PGDATA`.
/// Runs as an init container of the PostgreSQL pod, before the server starts: single-user mode
/// needs no connection and no authentication, and works whatever the old password was. On an
/// empty volume it does nothing (the image's entrypoint initialises it with the password).
/// Nothing secret is logged: the statement is not echoed, and failed statements are not logged.
pub const POSTGRES_REAPPLY_SCRIPT: &str = r#"set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "empty data directory: the image initialises it with the current password"
  exit 0
fi
nl='
'
case "$POSTGRES_USER$POSTGRES_PASSWORD" in
  *"$nl"*) echo "the credential Secret's username or password contains a newline" >&2; exit 1 ;;
esac
user=$(printf '%s' "$POSTGRES_USER" | sed 's/"/""/g')
pass=$(printf '%s' "$POSTGRES_PASSWORD" | sed "s/'/''/g")
out=$(printf 'ALTER ROLE "%s" WITH LOGIN PASSWORD '"'"'%s'"'"';\n' "$user" "$pass" \
  | postgres --single -D "$PGDATA" -c log_min_error_statement=panic -c log_min_messages=error postgres 2>&1) \
  || { printf '%s\n' "$out" >&2; exit 1; }
case "$out" in
  *ERROR*) printf '%s\n' "$out" >&2; echo "could not set the password of $POSTGRES_USER" >&2; exit 1 ;;
esac
echo "password of $POSTGRES_USER set from the credential Secret"
"#;

/// Sets `RABBITMQ_DEFAULT_USER`'s password to `RABBITMQ_DEFAULT_PASS` once the node has booted
/// (creating the user, administrator on `/`, when the Secret names a new one). A postStart hook of
/// the RabbitMQ container: the node must run for its CLI. The password goes through stdin, so it
/// is in no process' arguments. The hook runs as soon as the container starts, before the Erlang
/// node is up, and `await_startup` fails at once (exit 69) on a node that is not running yet: the
/// hook first waits (up to 5 minutes) for the node to answer a ping.
pub const RABBITMQ_REAPPLY_SCRIPT: &str = r#"set -eu
i=0
until rabbitmq-diagnostics -q ping >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -ge 300 ]; then echo "the RabbitMQ node did not start within 300 s" >&2; exit 1; fi
  sleep 1
done
rabbitmqctl -q --timeout 300 await_startup
u="$RABBITMQ_DEFAULT_USER"
if rabbitmqctl -q list_users --no-table-headers | cut -f1 | grep -qxF -- "$u"; then
  printf '%s' "$RABBITMQ_DEFAULT_PASS" | rabbitmqctl -q change_password "$u"
else
  printf '%s' "$RABBITMQ_DEFAULT_PASS" | rabbitmqctl -q add_user "$u"
  rabbitmqctl -q set_user_tags "$u" administrator
  rabbitmqctl -q set_permissions -p / "$u" '.*' '.*' '.*'
fi
"#;

/// The init container of the PostgreSQL pod: same image, env and data volume as the server.
pub fn postgres_init_container(server: &Container) -> Container {
    Container {
        name: "apply-credentials".into(),
        image: server.image.clone(),
        image_pull_policy: server.image_pull_policy.clone(),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            POSTGRES_REAPPLY_SCRIPT.into(),
        ]),
        env: server.env.clone(),
        // Single-user mode runs the same server code: the server's resources suit it.
        resources: server.resources.clone(),
        security_context: server.security_context.clone(),
        volume_mounts: server.volume_mounts.clone(),
        ..Default::default()
    }
}

/// The postStart hook of the RabbitMQ container.
pub fn rabbitmq_hook() -> Lifecycle {
    Lifecycle {
        post_start: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    RABBITMQ_REAPPLY_SCRIPT.into(),
                ]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the datastore pods and the services' pods must restart for.
pub fn postgres_hash(c: &Credentials) -> String {
    content_hash(&serde_json::json!({"username": c.username, "password": c.password}))
}

pub fn rabbitmq_hash(c: &RabbitCredentials) -> String {
    content_hash(&serde_json::json!({
        "username": c.username, "password": c.password, "erlang-cookie": c.erlang_cookie,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{BuildInput, Kind};
    use super::*;
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};

    fn build_with_passwords(pg: &str, mq: &str) -> Vec<super::super::Child> {
        let p = platform("  ingress: {host: h.example.com}");
        let r = crate::validate::validate(&p, &Default::default()).unwrap();
        let mut m = crate::material::SecretMaterial::generate("a@b.c", true, true);
        m.postgres.as_mut().unwrap().password = pg.into();
        m.rabbitmq.as_mut().unwrap().password = mq.into();
        m.rabbitmq.as_mut().unwrap().erlang_cookie = "cookie".into();
        super::super::build(&BuildInput {
            platform: &p,
            resolved: &r,
            material: &m,
            deploy_versions: Default::default(),
        })
    }

    fn annotation(
        pod: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    ) -> String {
        pod.as_ref().unwrap().annotations.as_ref().unwrap()[DATASTORE_CREDENTIALS_ANNOTATION]
            .clone()
    }

    #[test]
    fn postgres_reapplies_the_secrets_password_before_it_starts() {
        let all = build_with_passwords("one", "mq");
        let sts: StatefulSet = get(&all, Kind::StatefulSet, "hd-postgres");
        let pod = sts.spec.template.spec.unwrap();
        let init = &pod.init_containers.as_ref().unwrap()[0];
        let server = &pod.containers[0];
        assert_eq!(init.image, server.image);
        assert_eq!(
            init.env, server.env,
            "POSTGRES_USER/_PASSWORD from the Secret, PGDATA"
        );
        assert_eq!(init.volume_mounts, server.volume_mounts, "the data volume");
        assert_eq!(init.security_context, server.security_context);
        let cmd = init.command.as_ref().unwrap();
        assert_eq!(cmd[..2], ["sh", "-c"]);
        assert!(cmd[2].contains("postgres --single"), "{}", cmd[2]);
        assert!(cmd[2].contains("ALTER ROLE"), "{}", cmd[2]);
    }

    #[test]
    fn rabbitmq_reapplies_the_secrets_password_once_booted() {
        let all = build_with_passwords("pg", "one");
        let sts: StatefulSet = get(&all, Kind::StatefulSet, "hd-rabbitmq");
        let c = &sts.spec.template.spec.unwrap().containers[0];
        let hook = c.lifecycle.as_ref().unwrap().post_start.as_ref().unwrap();
        let cmd = hook.exec.as_ref().unwrap().command.as_ref().unwrap();
        // postStart runs before the node is up, and await_startup refuses a node that is not
        // running yet: the hook waits for the node to answer first.
        let (ping, await_startup) = (
            cmd[2].find("rabbitmq-diagnostics -q ping"),
            cmd[2].find("await_startup"),
        );
        assert!(
            matches!((ping, await_startup), (Some(p), Some(a)) if p < a),
            "{}",
            cmd[2]
        );
        assert!(cmd[2].contains("change_password"));
        assert!(
            !cmd[2].contains("change_password \"$u\" \"$RABBITMQ_DEFAULT_PASS\""),
            "the password goes through stdin"
        );
    }

    #[test]
    fn a_changed_password_restarts_its_datastore_and_every_service() {
        let before = build_with_passwords("one", "mq");
        let after = build_with_passwords("two", "mq");
        let sts = |all: &[super::super::Child], n: &str| {
            let s: StatefulSet = get(all, Kind::StatefulSet, n);
            annotation(&s.spec.template.metadata)
        };
        assert_ne!(sts(&before, "hd-postgres"), sts(&after, "hd-postgres"));
        assert_eq!(
            sts(&before, "hd-rabbitmq"),
            sts(&after, "hd-rabbitmq"),
            "RabbitMQ keeps running"
        );
        for svc in [
            "hd-user",
            "hd-ticket",
            "hd-notification",
            "hd-audit",
            "hd-admin",
        ] {
            let d = |all: &[super::super::Child]| {
                let d: Deployment = get(all, Kind::Deployment, svc);
                annotation(&d.spec.template.metadata)
            };
            assert_ne!(d(&before), d(&after), "{svc} reads the new URL at start");
        }
    }
}
