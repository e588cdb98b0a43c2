//! `kind = "azure-ad"` against the Microsoft Graph test server
//! (`tests/graph-server`), a separate process speaking the documented protocol.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::graph::{CLIENT_ID, CLIENT_SECRET, GraphServer, TENANT, certificate};
use crate::support::{Env, user};

fn env_for(server: &GraphServer, credential: &str, extra: &str) -> Env {
    let env = Env::new("");
    std::fs::write(env.path().join("client-secret"), CLIENT_SECRET).expect("write");
    env.write_config(&format!(
        r#"[store]
path = "data"
[[tenant]]
id = "contoso"
[[tenant.source]]
name = "entra"
kind = "azure-ad"
tenant_id = "{TENANT}"
client_id = "{CLIENT_ID}"
{credential}
authority_url = "{url}"
graph_url = "{url}"
extension_attributes = ["extension_0a1b2c3d4e5f_costCenter"]
{extra}
[tenant.safety]
max_delete_percent = 100
"#,
        url = server.url
    ));
    env
}

const SECRET: &str = "client_secret = { file = \"client-secret\" }";

fn read(report: &Value) -> &Value {
    &report["sources"][0]["read"]
}

fn server_users(server: &GraphServer) -> Vec<String> {
    server.state()["users"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
}

fn by_external_id<'a>(users: &'a [Value], id: &str) -> Option<&'a Value> {
    users.iter().find(|u| u["externalId"] == id)
}

#[test]
fn a_tenant_is_read_whole_through_many_pages_then_incrementally() {
    let server = GraphServer::start(5000, 500, &["--page-size", "200"]);
    let env = env_for(&server, SECRET, "");
    let (run, report) = env.sync(&[]);
    run.ok();
    let r = read(&report);
    assert_eq!(
        (r["mode"].as_str(), r["users"].as_u64(), r["groups"].as_u64()),
        (Some("full"), Some(5000), Some(500)),
        "{r}"
    );
    let pages: Vec<String> = server.requests().into_iter().filter(|q| q.contains("/delta")).collect();
    assert!(pages.len() >= 25 + 3, "5,000 users at 200 a page: {} delta requests", pages.len());
    assert!(pages[0].contains("$select=") && pages.iter().any(|p| p.contains("members")), "{:?}", &pages[..2]);
    let users = env.users("contoso");
    assert_eq!(users.len(), 5000);
    let ids = server_users(&server);
    let first = by_external_id(&users, &ids[0]).expect("anchored on the Graph id");
    assert_eq!(first["active"], true);
    assert!(first["userName"].as_str().is_some_and(|u| u.ends_with("@contoso.test")), "{first}");
    let stored_groups = env.groups("contoso");
    assert_eq!(stored_groups.len(), 500);
    let state = server.state();
    let (gid, g) = state["groups"].as_object().and_then(|m| m.iter().next()).expect("a group");
    let stored = stored_groups.iter().find(|x| x["externalId"] == gid.as_str()).expect("group stored");
    assert_eq!(
        stored["members"].as_array().map(Vec::len),
        g["members"].as_array().map(Vec::len),
        "every member of {gid}"
    );

    // Nothing changed: the delta links return nothing new.
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["status"], "no-changes");
    assert_eq!((read(&report)["mode"].as_str(), read(&report)["users"].as_u64()), (Some("incremental"), Some(0)));

    // Changes: retitle, disable, create, delete, soft-delete; a member in, a member out.
    let (retitled, disabled, deleted, soft) = (&ids[1], &ids[2], &ids[3], &ids[4]);
    server.update(retitled, json!({ "jobTitle": "CTO", "displayName": "The Chief" }));
    server.update(disabled, json!({ "accountEnabled": false }));
    server.admin(
        "create-user",
        json!({ "id": "11111111-2222-4333-8444-555555555555", "props": {
            "userPrincipalName": "new.hire@contoso.test", "displayName": "New Hire", "givenName": "New",
            "surname": "Hire", "mail": "new.hire@contoso.test", "accountEnabled": true } }),
    );
    server.admin("delete", json!({ "id": deleted }));
    server.admin("soft-delete", json!({ "id": soft }));
    let members: Vec<String> =
        g["members"].as_array().into_iter().flatten().filter_map(|m| m.as_str().map(str::to_string)).collect();
    let leaving = members.iter().find(|m| !(*m == deleted || *m == soft)).cloned().expect("a member to remove");
    let joining = ids.iter().rev().find(|u| !members.contains(u)).cloned().expect("a user to add");
    server.admin("remove-member", json!({ "id": gid, "member": leaving }));
    server.admin("add-member", json!({ "id": gid, "member": joining }));
    server.requests();

    let (run, report) = env.sync(&[]);
    run.ok();
    let r = read(&report);
    assert_eq!(r["mode"], "incremental", "{r}");
    assert_eq!(r["users"], 3, "retitled, disabled and new, nothing else: {r}");
    assert!(r["groups"].as_u64().unwrap_or(0) >= 1, "{r}");
    assert_eq!(r["deleted"], 1, "{r}");
    let fetched: BTreeSet<String> =
        server.requests().into_iter().filter(|q| q.starts_with("GET /v1.0/users/") && !q.contains("delta")).collect();
    assert_eq!(fetched.len(), 3, "each changed user fetched whole, no other: {fetched:?}");

    let users = env.users("contoso");
    assert_eq!(users.len(), 5000, "one new, one deleted; the soft-deleted one stays, inactive");
    assert!(by_external_id(&users, deleted).is_none());
    assert_eq!(by_external_id(&users, soft).expect("soft-deleted user kept")["active"], false);
    assert_eq!(by_external_id(&users, disabled).expect("disabled")["active"], false);
    let chief = by_external_id(&users, retitled).expect("retitled");
    assert_eq!(chief["displayName"], "The Chief");
    assert!(user(&users, "new.hire@contoso.test").is_some());
    let stored = env.groups("contoso").into_iter().find(|x| x["externalId"] == gid.as_str()).expect("group");
    let member_ids: BTreeSet<String> = stored["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["value"].as_str().map(str::to_string))
        .collect();
    let id_of = |anchor: &str| by_external_id(&users, anchor).and_then(|u| u["id"].as_str()).map(str::to_string);
    assert!(member_ids.contains(&id_of(&joining).expect("joining user")), "the added member is in");
    assert!(!member_ids.contains(&id_of(&leaving).expect("leaving user")), "the removed member is out");
    let expected = server.state()["groups"][gid.as_str()]["members"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(member_ids.len(), expected - usize::from(members.contains(soft)), "no member lost or duplicated");

    // The audit ties the incremental run's changes to the delta link it ended at.
    let audit = env.run(&["audit", "export", "--tenant", "contoso"]).ok().stdout;
    let last_run: Value = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == "run")
        .last()
        .expect("a run record");
    let position = last_run["detail"]["positions"]["entra"]["graph.users_delta"].as_str().unwrap_or("");
    assert!(position.contains("deltatoken") || position.contains("delta"), "{last_run}");
}

#[test]
fn an_expired_delta_link_means_a_complete_full_read() {
    let server = GraphServer::start(300, 20, &["--page-size", "50"]);
    let env = env_for(&server, SECRET, "");
    env.sync(&[]).0.ok();
    let before = env.users("contoso").len();
    let ids = server_users(&server);
    server.update(&ids[0], json!({ "displayName": "Changed while the token expired" }));
    server.admin("expire-delta-tokens", json!({}));
    let (run, report) = env.sync(&[]);
    run.ok();
    let r = read(&report);
    assert_eq!(r["mode"], "full", "410 Gone restarts from scratch: {r}");
    assert_eq!(report["counts"]["deletes"], 0, "a resync deletes nothing that still exists");
    assert_eq!(env.users("contoso").len(), before);
    assert_eq!(
        by_external_id(&env.users("contoso"), &ids[0]).expect("user")["displayName"],
        "Changed while the token expired"
    );
    // And the new delta link works.
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(read(&report)["mode"], "incremental");
}

#[test]
fn throttling_and_outages_mid_round_are_waited_out_without_loss() {
    let server = GraphServer::start(600, 30, &["--page-size", "100"]);
    let env = env_for(&server, SECRET, "");
    server.admin("faults", json!({ "throttle": 2, "retry_after": 1, "unavailable": 2 }));
    let (run, report) = env.sync(&[]);
    run.ok();
    let r = read(&report);
    assert!(r["waited_ms"].as_u64().unwrap_or(0) >= 2000, "honoured Retry-After twice: {r}");
    assert_eq!((r["users"].as_u64(), r["groups"].as_u64()), (Some(600), Some(30)), "{r}");
    assert_eq!(env.users("contoso").len(), 600, "nothing lost or duplicated");

    // An expired access token is refreshed once, transparently.
    server.admin("expire-access-tokens", json!({}));
    server.update(&server_users(&server)[5], json!({ "displayName": "After refresh" }));
    env.sync(&[]).0.ok();
    assert_eq!(
        by_external_id(&env.users("contoso"), &server_users(&server)[5]).expect("user")["displayName"],
        "After refresh"
    );
}

#[test]
fn a_client_certificate_authenticates_with_a_signed_assertion() {
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key) = certificate(dir.path());
    let server = GraphServer::start(50, 5, &["--certificate", cert.to_str().expect("path")]);
    let env = env_for(
        &server,
        &format!(
            "client_certificate = {:?}\nclient_key = {{ file = {:?} }}",
            cert.display().to_string(),
            key.display().to_string()
        ),
        "",
    );
    let test = env.run(&["source", "test", "--tenant", "contoso", "--source", "entra"]).ok();
    assert!(test.stdout.contains("token: acquired"), "{}", test.stdout);
    assert!(
        test.stdout.contains("User.Read.All") && test.stdout.contains("delta queries on users: supported"),
        "{}",
        test.stdout
    );
    env.sync(&[]).0.ok();
    assert_eq!(env.users("contoso").len(), 50);

    // A certificate the app does not know is refused with Microsoft's reason.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).expect("mkdir");
    let (other, other_key) = certificate(&other_dir);
    let env = env_for(
        &server,
        &format!(
            "client_certificate = {:?}\nclient_key = {{ file = {:?} }}",
            other.display().to_string(),
            other_key.display().to_string()
        ),
        "",
    );
    let refused = env.run(&["source", "test", "--tenant", "contoso", "--source", "entra"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("AADSTS700027") && refused.stderr.contains("not registered"), "{}", refused.stderr);
}

#[test]
fn a_wrong_client_secret_is_a_clear_authentication_error() {
    let server = GraphServer::start(10, 1, &[]);
    let env = env_for(&server, SECRET, "");
    std::fs::write(env.path().join("client-secret"), "the-secret-id-not-its-value").expect("write");
    let (run, _) = env.sync(&[]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("authentication failed")
            && run.stderr.contains("AADSTS7000215")
            && run.stderr.contains("client secret is wrong"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("the-secret-id-not-its-value"), "the secret is never printed");
    let plain = Env::new("");
    plain.write_config(&format!(
        "[[tenant]]\nid = \"t\"\n[[tenant.source]]\nname = \"e\"\nkind = \"azure-ad\"\ntenant_id = \"x\"\nclient_id = \"y\"\nclient_secret = {{ env = \"NOPE\" }}\ngraph_url = \"http://graph.example.com\"\n"
    ));
    let refused = plain.run(&["config", "check"]);
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("only for a loopback address"), "{}", refused.stderr);
}

#[test]
fn scope_groups_extension_attributes_and_the_immutable_id_anchor() {
    let server = GraphServer::start(200, 20, &[]);
    let env = env_for(
        &server,
        SECRET,
        r#"anchor = "onPremisesImmutableId"
scope_groups = ["team-009"]
[tenant.mapping]
userName = "lower(userPrincipalName)"
"custom.costCenter" = "extension_0a1b2c3d4e5f_costCenter"
"custom.legacyCode" = "onPremisesExtensionAttributes.extensionAttribute1"
[tenant.custom_attributes.costCenter]
type = "string"
[tenant.custom_attributes.legacyCode]
type = "string"
"#,
    );
    env.sync(&[]).0.ok();
    let state = server.state();
    let groups = state["groups"].as_object().expect("groups");
    let members_of = |name: &str| -> BTreeSet<String> {
        groups
            .values()
            .find(|g| g["displayName"] == name)
            .map(|g| {
                g["members"].as_array().into_iter().flatten().filter_map(|m| m.as_str().map(str::to_string)).collect()
            })
            .unwrap_or_default()
    };
    // team-009 nests team-008: both teams' users are in scope, nobody else.
    let direct = members_of("team-009");
    let nested = members_of("team-008");
    let users = env.users("contoso");
    assert!(!users.is_empty());
    let expected_users = direct.iter().chain(nested.iter()).filter(|id| server_users(&server).contains(id)).count();
    assert_eq!(users.len(), expected_users, "scope follows nesting");
    let u = &users[0];
    let anchor = u["externalId"].as_str().unwrap_or_default();
    assert!(!anchor.contains('-') && !anchor.is_empty(), "the immutable id, not the Graph id: {anchor}");
    let ext = &u["urn:roster:params:scim:schemas:extension:custom:2.0:User"];
    assert!(ext["costCenter"].as_str().is_some_and(|c| c.starts_with("CC")), "{u}");
    assert!(ext["legacyCode"].as_str().is_some_and(|c| c.starts_with("cc-")), "{u}");

    // An attribute filter narrows the users further: managers only.
    let env = env_for(&server, SECRET, "user_attribute_filter = { jobTitle = [\"manager\"] }");
    env.sync(&[]).0.ok();
    let managers = env.users("contoso");
    assert_eq!(managers.len(), 200_usize.div_ceil(7), "every seventh user is a Manager");
}
