//! People on a server: users with roles and their own tokens, what each role may do, revocation.

use serde_json::{json, Value};
use tests::{client, ok_json, Imgctl, Server};

/// `imgctl` against `server` with `token` as IMAGED_TOKEN.
fn as_user(t: &Imgctl, server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    t.command().args(args).env("IMAGED_SERVER", &server.url).env("IMAGED_TOKEN", token).output().unwrap()
}

/// PUT /v1/channels/{channel} with `token`: status and error code.
fn set_channel(server: &Server, token: &str, channel: &str, generation: &str) -> (u16, Value) {
    let r = client().put(format!("{}/v1/channels/{channel}", server.url)).bearer_auth(token).json(&json!({ "generation": generation })).send().unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn add_user(server: &Server, token: &str, name: &str, role: &str) -> (u16, Value) {
    let r = client().post(format!("{}/v1/users", server.url)).bearer_auth(token).json(&json!({ "name": name, "role": role })).send().unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

#[test]
fn roles_bound_what_each_token_may_do_and_a_revoked_token_stops_at_once() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "one\n").unwrap();
    t.import(&src, "img");

    let alice = ok_json(t.remote(&server, &["--json", "user", "add", "alice", "--role", "publisher"]));
    assert_eq!((alice["user"]["role"].as_str(), alice["user"]["created_by"].as_str()), (Some("publisher"), Some("admin")));
    let alice = alice["token"].as_str().unwrap().to_string();
    let vic = ok_json(t.remote(&server, &["--json", "user", "add", "vic", "--role", "viewer"]))["token"].as_str().unwrap().to_string();
    assert_ne!(alice, vic);
    let (status, body) = add_user(&server, &server.token(), "alice", "viewer");
    assert_eq!((status, body["error"].as_str()), (409, Some("user_exists")));
    let (status, body) = add_user(&server, &server.token(), "Not A Name", "viewer");
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");

    // A publisher pushes and moves channels, but manages no users.
    ok_json(as_user(&t, &server, &alice, &["--json", "push", "img@1"]));
    assert_eq!(set_channel(&server, &alice, "img/stable", "img@1").0, 201);
    let (status, body) = add_user(&server, &alice, "mallory", "admin");
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");

    // A viewer reads, and is refused every write with `forbidden`.
    let r = client().get(format!("{}/v1/channels/img/stable", server.url)).bearer_auth(&vic).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, body) = set_channel(&server, &vic, "img/stable", "img@1");
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    assert!(!as_user(&t, &server, &vic, &["push", "img@1"]).status.success());

    // Revoking alice locks out alice alone.
    let revoked = ok_json(t.remote(&server, &["--json", "user", "revoke", "alice"]));
    assert!(revoked["revoked"].is_i64(), "{revoked}");
    let (status, body) = set_channel(&server, &alice, "img/stable", "img@1");
    assert_eq!((status, body["error"].as_str()), (403, Some("bad_token")), "{body}");
    let r = client().get(format!("{}/v1/channels/img/stable", server.url)).bearer_auth(&vic).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "vic is unaffected");
    let users = ok_json(t.remote(&server, &["--json", "user", "list"]));
    let listed: Vec<(&str, bool)> = users["users"].as_array().unwrap().iter().map(|u| (u["name"].as_str().unwrap(), u["revoked"].is_i64())).collect();
    assert_eq!(listed, [("alice", true), ("vic", false)]);
    assert!(!users.to_string().contains(&vic), "tokens are never listed");
    // Only admins list users.
    let r = client().get(format!("{}/v1/users", server.url)).bearer_auth(&vic).send().unwrap();
    assert_eq!(r.status().as_u16(), 403);
}
