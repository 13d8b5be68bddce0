//! End to end, gateway mode: Debian's docker-registry with no auth at all behind
//! `portcullis serve` with `[upstream]`; skopeo and raw HTTP talk only to the gateway.

use crate::util::{Running, SERVICE, Setup, basic, header, http, oci_image, push, require, skopeo};
use sha2::{Digest, Sha256};

const ACL: &str = r#"{"rules": [
  {"match": {"account": "admin"}, "actions": ["*"]},
  {"match": {"group": "release"}, "actions": ["pull", "push"]},
  {"match": {"account": "/.+/", "name": "${account}/**"}, "actions": ["pull", "push", "delete"]},
  {"match": {"account": "", "name": "public/*"}, "actions": ["pull"]}
]}"#;

const PROTECTED_TAGS: &str = r#"
[[policy]]
name = "protected-tags"
module = "policies/protected_tags.wasm"
settings = { tags = ["v*", "stable"], groups = ["release"] }
"#;

const USERS: &[(&str, &str)] = &[
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("admin", "admin-pw"),
    ("carol", "carol-pw"),
];

/// Fields drop in order: the processes stop before their directories are removed.
struct Gateway {
    gateway: Running,
    registry: Option<Running>,
    setup: Setup,
    home: tempfile::TempDir,
    image: std::path::PathBuf,
}

impl Gateway {
    fn start() -> Gateway {
        Gateway::with_payload(b"hello through the gateway")
    }

    fn with_payload(payload: &[u8]) -> Gateway {
        require("docker-registry");
        require("skopeo");
        let setup = Setup::gateway(
            ACL,
            USERS,
            &format!("{PROTECTED_TAGS}\n[log]\ndecisions = \"decisions.jsonl\"\n"),
        );
        let registry = setup.start_plain_registry();
        let gateway = setup.start_gateway();
        let home = tempfile::tempdir().expect("tempdir");
        let image = home.path().join("image");
        oci_image(&image, payload);
        Gateway {
            gateway,
            registry: Some(registry),
            setup,
            home,
            image,
        }
    }

    /// The digest of the one layer of `repo:latest` as the registry stores it (skopeo
    /// compresses the layer on push, so it is not the local one).
    fn layer_of(&self, repo: &str) -> String {
        let head = format!(
            "GET /v2/{repo}/manifests/latest HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nAccept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json\r\nConnection: close\r\n\r\n",
            basic_auth("admin")
        );
        let (status, _, body) = http(self.gateway.port, &head, b"");
        assert_eq!(status, 200);
        let manifest: serde_json::Value = serde_json::from_slice(&body).expect("manifest json");
        manifest["layers"][0]["digest"]
            .as_str()
            .expect("a layer")
            .to_string()
    }

    /// skopeo copy of the local image to `repo:tag` through the gateway.
    fn push(&self, creds: &str, reference: &str) -> (bool, String) {
        push(
            self.home.path(),
            &self.image,
            creds,
            self.gateway.port,
            reference,
        )
    }

    /// skopeo copy from the gateway into a local OCI layout.
    fn pull(&self, creds: &str, reference: &str, into: &std::path::Path) -> (bool, String) {
        let src = format!("docker://127.0.0.1:{}/{reference}", self.gateway.port);
        let dest = format!("oci:{}:latest", into.display());
        skopeo(
            self.home.path(),
            &[
                "copy",
                "--retry-times",
                "0",
                "--src-tls-verify=false",
                "--src-creds",
                creds,
                &src,
                &dest,
            ],
        )
    }

    /// A request to the gateway; `auth` is a whole `Authorization` value or "".
    fn request(&self, method: &str, path: &str, auth: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
        let auth = if auth.is_empty() {
            String::new()
        } else {
            format!("Authorization: {auth}\r\n")
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len(),
            port = self.gateway.port,
        );
        http(self.gateway.port, &head, body)
    }

    /// `Bearer <token>` for `user` from the gateway's own token endpoint.
    fn bearer(&self, user: &str, scope: &str) -> String {
        let head = format!(
            "GET /token?service={SERVICE}&scope={scope} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            basic_auth(user)
        );
        let (status, _, body) = http(self.gateway.port, &head, b"");
        assert_eq!(status, 200);
        let token: serde_json::Value = serde_json::from_slice(&body).expect("json");
        format!("Bearer {}", token["token"].as_str().expect("a token"))
    }

    fn registry_port(&self) -> u16 {
        self.setup.registry_port
    }

    /// The status of a HEAD of the blob asked of the registry itself, bypassing the gateway.
    fn blob_at_registry(&self, repo: &str, digest: &str) -> u16 {
        let head = format!(
            "HEAD /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n"
        );
        http(self.registry_port(), &head, b"").0
    }
}

fn basic_auth(user: &str) -> String {
    format!("Basic {}", basic(user, &format!("{user}-pw")))
}

fn errors_code(body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).expect("a registry error body");
    json["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn skopeo_pushes_and_pulls_through_the_gateway_as_the_policies_allow() {
    let g = Gateway::start();
    let (ok, err) = g.push("alice:alice-pw", "alice/app:latest");
    assert!(ok, "alice pushes her own repository: {err}");
    let (ok, err) = g.push("bob:bob-pw", "alice/app:latest");
    assert!(!ok, "bob may not push to alice/");
    assert!(
        err.contains("denied") || err.contains("unauthorized") || err.contains("insufficient"),
        "{err}"
    );
    let (ok, err) = g.push("alice:wrong", "alice/app:latest");
    assert!(
        !ok && err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );

    let out = g.home.path().join("pulled");
    let (ok, err) = g.pull("alice:alice-pw", "alice/app:latest", &out);
    assert!(ok, "alice pulls: {err}");
    let (ok, _) = g.pull("bob:bob-pw", "alice/app:latest", &g.home.path().join("bob"));
    assert!(!ok, "bob may not pull alice/app");
    // What landed is in the registry itself, under the name the policies decided on.
    let (status, _, _) = http(
        g.registry_port(),
        "HEAD /v2/alice/app/manifests/latest HTTP/1.1\r\nHost: r\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 200);
}

/// xorshift bytes: incompressible and quick to make.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn a_64_mib_layer_streams_both_ways_with_its_digest_intact() {
    let g = Gateway::with_payload(&noise(64 << 20));
    let (ok, err) = g.push("alice:alice-pw", "alice/big:latest");
    assert!(ok, "push of a 64 MiB layer: {err}");
    let out = g.home.path().join("big");
    let (ok, err) = g.pull("alice:alice-pw", "alice/big:latest", &out);
    assert!(ok, "pull of a 64 MiB layer: {err}");
    let layer = g.layer_of("alice/big");
    let hex = layer.trim_start_matches("sha256:");
    let pulled = std::fs::read(out.join("blobs/sha256").join(hex)).expect("pulled layer");
    assert!(pulled.len() > 64 << 20);
    assert_eq!(
        hex::encode(Sha256::digest(&pulled)),
        hex,
        "the layer is intact"
    );

    // The same blob by plain HTTP with Basic credentials, whole and by range.
    let path = format!("/v2/alice/big/blobs/{layer}");
    let (status, head, body) = g.request("GET", &path, &basic_auth("alice"), b"");
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "docker-content-digest"), Some(layer.as_str()));
    assert_eq!(hex::encode(Sha256::digest(&body)), hex);
    let ranged = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nRange: bytes=10-19\r\nConnection: close\r\n\r\n",
        basic_auth("alice")
    );
    let (status, head, body) = http(g.gateway.port, &ranged, b"");
    assert_eq!(status, 206, "{head}");
    assert_eq!(body, pulled[10..20]);
    let (status, head, body) = g.request("HEAD", &path, &basic_auth("alice"), b"");
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "content-length"),
        Some(pulled.len().to_string().as_str())
    );
    assert!(body.is_empty());
}

#[test]
fn a_mount_from_an_unreadable_repository_becomes_an_upload() {
    let g = Gateway::start();
    assert!(g.push("alice:alice-pw", "alice/app:latest").0);
    let layer = g.layer_of("alice/app");
    let mount = |user: &str, into: &str, from: &str| {
        let path = format!("/v2/{into}/blobs/uploads/?mount={layer}&from={from}");
        g.request("POST", &path, &basic_auth(user), b"")
    };
    // alice may read alice/app: the registry mounts the blob (201).
    let (status, head, _) = mount("alice", "alice/copy", "alice/app");
    assert_eq!(status, 201, "{head}");
    assert_eq!(header(&head, "docker-content-digest"), Some(layer.as_str()));
    // bob may not: the mount is dropped and an upload starts instead (202), pointing back at
    // the gateway, and bob's repository never gets alice's blob for free.
    let (status, head, _) = mount("bob", "bob/stolen", "alice/app");
    assert_eq!(status, 202, "{head}");
    let location = header(&head, "location").expect("an upload location");
    assert!(
        location.starts_with(&format!(
            "http://127.0.0.1:{}/v2/bob/stolen/blobs/uploads/",
            g.gateway.port
        )),
        "{location}"
    );
    let (status, _, _) = g.request(
        "HEAD",
        &format!("/v2/bob/stolen/blobs/{layer}"),
        &basic_auth("bob"),
        b"",
    );
    assert_eq!(status, 404);
}

/// The registry reads `mount` and `from` with Go's `r.FormValue`, which also parses a form
/// body and prefers it to the query: each way of putting them in a body is refused before it
/// reaches the registry, and alice's layer never lands in bob's repository.
#[test]
fn a_mount_smuggled_in_a_form_body_is_refused_and_the_blob_stays_out() {
    let g = Gateway::start();
    assert!(g.push("alice:alice-pw", "alice/private:latest").0);
    assert!(g.push("bob:bob-pw", "bob/own:latest").0);
    let layer = g.layer_of("alice/private");
    let form = format!("mount={layer}&from=alice%2Fprivate");
    let multipart = format!(
        "--xyz\r\nContent-Disposition: form-data; name=\"mount\"\r\n\r\n{layer}\r\n\
         --xyz\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\nalice/private\r\n--xyz--\r\n"
    );
    let attacks: Vec<(&str, String, Vec<&str>, String)> = vec![
        (
            "a url-encoded form",
            String::new(),
            vec!["application/x-www-form-urlencoded"],
            form.clone(),
        ),
        (
            "a form in another case, with parameters",
            String::new(),
            vec!["Application/X-WWW-Form-Urlencoded ; charset=UTF-8"],
            form.clone(),
        ),
        (
            "a multipart form",
            String::new(),
            vec!["multipart/form-data; boundary=xyz"],
            multipart,
        ),
        (
            "a body overriding the query's approved source",
            format!("?mount={layer}&from=bob/own"),
            vec!["application/x-www-form-urlencoded"],
            "from=alice%2Fprivate".to_string(),
        ),
        (
            "a form behind a second Content-Type",
            String::new(),
            vec![
                "application/x-www-form-urlencoded",
                "application/octet-stream",
            ],
            form.clone(),
        ),
    ];
    for (what, query, content_types, body) in attacks {
        let types: String = content_types
            .iter()
            .map(|t| format!("Content-Type: {t}\r\n"))
            .collect();
        let head = format!(
            "POST /v2/bob/f/blobs/uploads/{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\n{types}Content-Length: {}\r\nConnection: close\r\n\r\n",
            basic_auth("bob"),
            body.len()
        );
        let (status, head, response) = http(g.gateway.port, &head, body.as_bytes());
        assert_eq!(status, 400, "{what}: {head}");
        assert_eq!(errors_code(&response), "UNSUPPORTED", "{what}");
        assert_eq!(
            g.blob_at_registry("bob/f", &layer),
            404,
            "{what}: alice's layer reached bob/f"
        );
    }
    // The final PUT of an upload reads `digest` the same way: a form body is refused there too.
    let (status, head, _) = g.request("POST", "/v2/bob/f/blobs/uploads/", &basic_auth("bob"), b"");
    assert_eq!(status, 202, "{head}");
    let location = header(&head, "location").expect("an upload location");
    let upload = location.split_once("/v2/").expect("a registry path").1;
    let body = format!("digest={layer}");
    let put = format!(
        "PUT /v2/{upload} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        basic_auth("bob"),
        body.len()
    );
    let (status, head, _) = http(g.gateway.port, &put, body.as_bytes());
    assert_eq!(status, 400, "{head}");
}

/// Real clients mount layers across repositories (skopeo remembers where it pushed a blob):
/// the mount works where the caller may pull the source, and becomes a plain upload where
/// not, and both pushes succeed.
#[test]
fn skopeo_mounts_across_repositories_only_from_what_the_caller_may_pull() {
    let g = Gateway::start();
    assert!(g.push("alice:alice-pw", "alice/app:latest").0);
    let layer = g.layer_of("alice/app");
    let (ok, err) = g.push("alice:alice-pw", "alice/copy:latest");
    assert!(ok, "alice copies her image: {err}");
    let (ok, err) = g.push("bob:bob-pw", "bob/copy:latest");
    assert!(ok, "bob pushes the same image by uploading it: {err}");
    // The decision log is written by its own thread: wait for bob's decisions to reach it.
    let started = std::time::Instant::now();
    let source_decisions = loop {
        let log = std::fs::read_to_string(g.setup.path("decisions.jsonl")).unwrap_or_default();
        let decisions: Vec<serde_json::Value> = log
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON line"))
            .filter(|d| {
                d["scope"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("repository:alice/app:"))
            })
            .collect();
        if decisions.iter().any(|d| d["account"] == "bob") || started.elapsed().as_secs() > 5 {
            break decisions;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let by = |account: &str| -> Vec<&serde_json::Value> {
        source_decisions
            .iter()
            .filter(|d| d["account"] == account)
            .collect()
    };
    // alice's mount reached the policies with its source in view, and was granted.
    assert!(
        by("alice")
            .iter()
            .any(|d| d["operation"]["mount_from"] == "alice/app"
                && d["granted"] == serde_json::json!(["pull"])),
        "skopeo mounted for alice: {source_decisions:?}"
    );
    // skopeo asked to read the source for bob too (it only does to mount), and got nothing.
    assert!(
        !by("bob").is_empty(),
        "skopeo tried a mount for bob: {source_decisions:?}"
    );
    assert!(
        by("bob")
            .iter()
            .all(|d| d["granted"] == serde_json::json!([])),
        "{source_decisions:?}"
    );
    for repo in ["alice/copy", "bob/copy"] {
        assert_eq!(
            g.blob_at_registry(repo, &layer),
            200,
            "{repo} holds the layer"
        );
    }
}

#[test]
fn the_catalog_is_whole_for_admins_and_filtered_and_paged_for_others() {
    let g = Gateway::start();
    for (user, repo) in [
        ("alice", "alice/a1"),
        ("alice", "alice/a2"),
        ("alice", "alice/a3"),
        ("bob", "bob/b1"),
        ("admin", "public/p"),
    ] {
        let (ok, err) = g.push(&format!("{user}:{user}-pw"), &format!("{repo}:latest"));
        assert!(ok, "{repo}: {err}");
    }
    let list = |user: &str, query: &str| {
        let (status, head, body) = g.request(
            "GET",
            &format!("/v2/_catalog{query}"),
            &basic_auth(user),
            b"",
        );
        assert_eq!(status, 200, "{user}{query}: {head}");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let names: Vec<String> = json["repositories"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|n| n.as_str().expect("a name").to_string())
            .collect();
        (names, header(&head, "link").map(str::to_string))
    };
    let (all, _) = list("admin", "");
    assert_eq!(
        all,
        ["alice/a1", "alice/a2", "alice/a3", "bob/b1", "public/p"]
    );
    let (mine, link) = list("alice", "");
    assert_eq!(mine, ["alice/a1", "alice/a2", "alice/a3"]);
    assert_eq!(link, None);
    let (page, link) = list("alice", "?n=2");
    assert_eq!(page, ["alice/a1", "alice/a2"]);
    let link = link.expect("a next link");
    assert_eq!(link, "</v2/_catalog?last=alice%2Fa2&n=2>; rel=\"next\"");
    let next = link
        .trim_start_matches("</v2/_catalog")
        .split('>')
        .next()
        .expect("query");
    let (page, link) = list("alice", next);
    assert_eq!((page, link), (vec!["alice/a3".to_string()], None));
    let (theirs, _) = list("bob", "");
    assert_eq!(theirs, ["bob/b1"]);
}

/// Issue 12, review item 4: one catalog request fanned out to 100 upstream pages and
/// 100 000 decisions, anonymous callers included, and a few of them at once took the
/// cores everyone else's decisions needed. Now one request examines at most 10 pages and
/// says where to go on, listings decide in one lane, and other users' requests all succeed
/// while anonymous listings run in a loop. (The rates are measured by bench/catalog.sh.)
#[test]
fn catalog_floods_are_bounded_and_leave_other_users_their_decisions() {
    let g = Gateway::start();
    // 10 500 repositories, laid out in the registry's storage as pushes leave them.
    let repositories = g.setup.path("data/docker/registry/v2/repositories/load");
    for i in 0..10_500 {
        std::fs::create_dir_all(repositories.join(format!("r{i:05}/_layers"))).expect("mkdir");
    }
    let decisions = || -> u64 {
        let (_, _, body) = http(
            g.setup.admin_port,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"",
        );
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with("portcullis_policy_decisions_total{policy=\"acl\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = decisions();
    let (status, head, body) = g.request("GET", "/v2/_catalog?n=100", "", b"");
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).expect("json")["repositories"],
        serde_json::json!([]),
        "anonymous callers may pull none of them"
    );
    assert_eq!(
        header(&head, "link"),
        Some("</v2/_catalog?last=load%2Fr09999&n=100>; rel=\"next\""),
        "it stops after 10 000 repositories and says where to go on"
    );
    assert_eq!(
        decisions() - before,
        1 + 10_000,
        "the catalog scope, then one decision per repository examined"
    );

    let flooding = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|scope| {
        let listings: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut served = 0;
                    while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                        // One listing at a time: the ones queued too long get a quick 503.
                        let (status, head, _) = g.request("GET", "/v2/_catalog?n=100", "", b"");
                        match status {
                            200 => served += 1,
                            503 => assert_eq!(header(&head, "retry-after"), Some("1"), "{head}"),
                            _ => panic!("{head}"),
                        }
                    }
                    served
                })
            })
            .collect();
        // alice asks for scopes nobody asked before: every one is a fresh decision.
        let started = std::time::Instant::now();
        let mut issued = 0;
        while started.elapsed() < std::time::Duration::from_secs(3) {
            let head = format!(
                "GET /token?service={SERVICE}&scope=repository:alice/app{issued}:pull HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
                basic_auth("alice")
            );
            let (status, head, body) = http(g.gateway.port, &head, b"");
            assert_eq!(status, 200, "{head}");
            let token: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let claims = token["token"]
                .as_str()
                .and_then(|t| t.split('.').nth(1))
                .and_then(|p| data_encoding::BASE64URL_NOPAD.decode(p.as_bytes()).ok())
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
                .expect("a readable token");
            assert_eq!(
                claims["access"][0]["actions"],
                serde_json::json!(["pull"]),
                "decision {issued} failed under the listings"
            );
            issued += 1;
        }
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        let served: u32 = listings
            .into_iter()
            .map(|l| l.join().expect("listing thread"))
            .sum();
        assert!(
            issued > 0 && served > 0,
            "{issued} tokens, {served} listings"
        );
    });
}

#[test]
fn protected_tags_are_written_only_by_the_release_group() {
    let g = Gateway::start();
    let (ok, err) = g.push("alice:alice-pw", "alice/app:v1.0");
    assert!(!ok, "alice may not push a release tag");
    assert!(
        err.contains("denied") || err.contains("insufficient") || err.contains("unauthorized"),
        "{err}"
    );
    let (ok, err) = g.push("alice:alice-pw", "alice/app:dev");
    assert!(ok, "other tags are untouched: {err}");
    let (ok, err) = g.push("carol:carol-pw", "alice/app:v1.0");
    assert!(ok, "the release group may: {err}");
    // A push by digest is untouched too.
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json\r\n";
    let get = format!(
        "GET /v2/alice/app/manifests/dev HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n{accept}Connection: close\r\n\r\n",
        basic_auth("alice")
    );
    let (status, _, manifest) = http(g.gateway.port, &get, b"");
    assert_eq!(status, 200);
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
    let put = |reference: &str| {
        let head = format!(
            "PUT /v2/alice/app/manifests/{reference} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            basic_auth("alice"),
            manifest.len()
        );
        http(g.gateway.port, &head, &manifest)
    };
    assert_eq!(put(&digest).0, 201);
    let (status, _, body) = put("stable");
    assert_eq!(status, 403);
    assert_eq!(errors_code(&body), "DENIED");
    // The user learns which policy said no, and why.
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let message = json["errors"][0]["message"].as_str().unwrap_or_default();
    assert_eq!(
        message,
        "access to repository:alice/app:pull,push is not granted (protected-tags: tag \"stable\" \
         is protected: only members of [\"release\"] may push or delete it)"
    );
    // Deleting a protected tag is guarded as well (the registry would refuse it anyway,
    // deletion is by digest; the policy answers first).
    let (status, _, _) = g.request(
        "DELETE",
        "/v2/alice/app/manifests/v1.0",
        &basic_auth("alice"),
        b"",
    );
    assert_eq!(status, 403);
}

#[test]
fn plain_http_clients_get_challenges_tokens_work_and_errors_look_like_the_registry() {
    let g = Gateway::start();
    assert!(g.push("alice:alice-pw", "alice/app:latest").0);
    let realm = format!(
        "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"{SERVICE}\"",
        g.gateway.port
    );

    // The ping: no credentials, a challenge; with Basic, the registry's answer.
    let (status, head, body) = g.request("GET", "/v2/", "", b"");
    assert_eq!(status, 401);
    assert_eq!(header(&head, "www-authenticate"), Some(realm.as_str()));
    assert_eq!(
        header(&head, "docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert_eq!(errors_code(&body), "UNAUTHORIZED");
    let (status, head, _) = g.request("GET", "/v2/", &basic_auth("alice"), b"");
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header(&head, "docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // Basic: allowed, denied (403), wrong password (401, same realm).
    let (status, _, _) = g.request("GET", "/v2/alice/app/tags/list", &basic_auth("alice"), b"");
    assert_eq!(status, 200);
    let (status, _, body) = g.request("GET", "/v2/alice/app/tags/list", &basic_auth("bob"), b"");
    assert_eq!((status, errors_code(&body)), (403, "DENIED".to_string()));
    let wrong = format!("Basic {}", basic("alice", "nope"));
    let (status, head, _) = g.request("GET", "/v2/alice/app/tags/list", &wrong, b"");
    assert_eq!(status, 401);
    assert_eq!(
        header(&head, "www-authenticate"),
        Some(format!("{realm},scope=\"repository:alice/app:pull\"").as_str())
    );

    // Anonymous: challenged with the scope it needs, so a client knows what to ask for.
    let (status, head, _) = g.request("GET", "/v2/alice/app/tags/list", "", b"");
    assert_eq!(status, 401);
    assert_eq!(
        header(&head, "www-authenticate"),
        Some(format!("{realm},scope=\"repository:alice/app:pull\"").as_str())
    );

    // Bearer: a token from the gateway's own realm, then insufficient_scope beyond it.
    let bearer = g.bearer("alice", "repository:alice/app:pull");
    let (status, _, body) = g.request("GET", "/v2/alice/app/tags/list", &bearer, b"");
    assert_eq!(status, 200);
    let tags: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(tags["tags"], serde_json::json!(["latest"]));
    let (status, head, _) = g.request("POST", "/v2/alice/app/blobs/uploads/", &bearer, b"");
    assert_eq!(status, 401, "the token grants pull only");
    assert_eq!(
        header(&head, "www-authenticate"),
        Some(
            format!(
                "{realm},scope=\"repository:alice/app:pull,push\",error=\"insufficient_scope\",\
                 error_description=\"access to repository:alice/app:pull,push is not granted by \
                 the token\""
            )
            .as_str()
        )
    );
    let (status, head, _) = g.request("GET", "/v2/alice/app/tags/list", "Bearer not.a.token", b"");
    assert_eq!(status, 401);
    let challenge = header(&head, "www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(&format!(
            "{realm},error=\"invalid_token\",error_description=\"unreadable token"
        )),
        "{challenge}"
    );

    // Paths that could reach another repository never leave the gateway.
    for path in [
        "/v2/alice/..%2fbob/tags/list",
        "/v2/alice//app/tags/list",
        "/v2/Alice/app/tags/list",
    ] {
        let (status, _, _) = g.request("GET", path, &basic_auth("admin"), b"");
        assert_eq!(status, 400, "{path}");
    }
    let (status, _, _) = g.request(
        "GET",
        "/v2/alice/app/nothing-here",
        &basic_auth("admin"),
        b"",
    );
    assert_eq!(status, 404);
}

#[test]
fn an_unreachable_registry_is_a_503_until_it_comes_back() {
    let mut g = Gateway::start();
    assert!(g.push("alice:alice-pw", "alice/app:latest").0);
    drop(g.registry.take());
    let (status, head, body) =
        g.request("GET", "/v2/alice/app/tags/list", &basic_auth("alice"), b"");
    assert_eq!(status, 503, "{head}");
    assert_eq!(errors_code(&body), "UNAVAILABLE");
    assert_eq!(
        header(&head, "docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert_eq!(
        g.request("GET", "/readyz", "", b"").0,
        503,
        "not ready without the registry"
    );
    g.registry = Some(g.setup.start_plain_registry());
    let (status, _, _) = g.request("GET", "/v2/alice/app/tags/list", &basic_auth("alice"), b"");
    assert_eq!(status, 200, "the gateway recovers by itself");
    let (status, _, body) = g.request("GET", "/readyz", "", b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let ready: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(ready["upstream"], "reachable");
}

#[test]
fn an_https_registry_is_reached_with_its_own_ca() {
    require("docker-registry");
    require("skopeo");
    let setup = Setup::gateway_https(ACL, USERS);
    let _registry = setup.start_plain_registry();
    let gateway = setup.start_gateway();
    let home = tempfile::tempdir().expect("tempdir");
    let image = home.path().join("image");
    oci_image(&image, b"over tls");
    let (ok, err) = push(
        home.path(),
        &image,
        "alice:alice-pw",
        gateway.port,
        "alice/tls:latest",
    );
    assert!(ok, "push through the gateway to an https registry: {err}");
    // The registry really is https only: plain http to it fails.
    let plain =
        std::net::TcpStream::connect(("127.0.0.1", setup.registry_port)).and_then(|mut s| {
            use std::io::{Read, Write};
            s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut out = Vec::new();
            s.read_to_end(&mut out)?;
            Ok(out)
        });
    let answer = String::from_utf8_lossy(&plain.unwrap_or_default()).into_owned();
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
}

#[test]
fn a_removed_user_is_refused_at_once_even_with_a_live_token() {
    let g = Gateway::start();
    assert!(g.push("alice:alice-pw", "alice/app:latest").0);
    let bearer = g.bearer("alice", "repository:alice/app:pull");
    assert_eq!(
        g.request("GET", "/v2/alice/app/tags/list", &bearer, b"").0,
        200
    );

    g.setup.remove_user("alice");
    let refused = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        g.request("GET", "/v2/alice/app/tags/list", &bearer, b"").0 == 401
    });
    assert!(refused, "the token of a removed user kept working");
    let (status, head, _) = g.request("GET", "/v2/alice/app/tags/list", &bearer, b"");
    assert_eq!(status, 401);
    assert!(
        header(&head, "www-authenticate").is_some_and(|c| c.contains(",error=\"invalid_token\"")),
        "{head}"
    );
    let (status, _, _) = g.request("GET", "/v2/alice/app/tags/list", &basic_auth("alice"), b"");
    assert_eq!(status, 401, "her password is gone too");
}

#[test]
fn sigterm_lets_a_blob_download_in_flight_finish_then_exits_0() {
    use std::io::{Read, Write};
    let mut g = Gateway::with_payload(&noise(32 << 20));
    assert!(g.push("alice:alice-pw", "alice/big:latest").0);
    let layer = g.layer_of("alice/big");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", g.gateway.port)).expect("connect");
    write!(
        stream,
        "GET /v2/alice/big/blobs/{layer} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        basic_auth("alice")
    )
    .expect("request");
    // Read the head and a first piece, then stop reading: the transfer is in flight.
    let mut first = vec![0u8; 64 * 1024];
    let n = stream.read(&mut first).expect("a first piece");
    let head_end = first[..n]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the head arrives first");
    let head = String::from_utf8_lossy(&first[..head_end]).into_owned();
    let length: usize = header(&head, "content-length")
        .expect("a length")
        .parse()
        .expect("a number");

    g.gateway.signal("TERM");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", g.gateway.port)).is_err(),
        "no new connections while draining"
    );
    let mut body = first[head_end + 4..n].to_vec();
    stream.read_to_end(&mut body).expect("the rest");
    assert_eq!(body.len(), length, "the whole blob arrived");
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&body))),
        layer
    );
    let status = g
        .gateway
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("it exits");
    assert!(status.success(), "{status}");
}

#[test]
fn sighup_reloads_every_file() {
    let g = Gateway::start();
    let reloads = || {
        let (_, _, body) = http(
            g.setup.admin_port,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"",
        );
        String::from_utf8_lossy(&body)
            .lines()
            .find(|l| l.starts_with("portcullis_reloads_total{files=\"policies\",result=\"ok\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = reloads();
    g.gateway.signal("HUP");
    let seen = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        reloads() > before
    });
    assert!(seen, "SIGHUP did not reload");
    assert_eq!(
        g.request("GET", "/healthz", "", b"").0,
        200,
        "and the gateway keeps serving"
    );
}

#[test]
fn skopeo_works_through_a_tls_gateway() {
    require("docker-registry");
    require("skopeo");
    let setup = Setup::gateway_tls(ACL, USERS);
    let _registry = setup.start_plain_registry();
    let gateway = setup.start_gateway();
    let home = tempfile::tempdir().expect("tempdir");
    let certs = home.path().join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir");
    std::fs::copy(setup.path("gateway.crt"), certs.join("ca.crt")).expect("trust the gateway");
    let certs = certs.to_str().expect("utf-8");
    let image = home.path().join("image");
    oci_image(&image, b"over tls to the gateway");
    let src = format!("oci:{}:latest", image.display());
    let dest = format!("docker://127.0.0.1:{}/alice/tls:latest", gateway.port);
    let (ok, err) = skopeo(
        home.path(),
        &[
            "copy",
            "--retry-times",
            "0",
            "--dest-cert-dir",
            certs,
            "--dest-creds",
            "alice:alice-pw",
            &src,
            &dest,
        ],
    );
    assert!(ok, "push over TLS, the certificate verified: {err}");
    let inspect = |creds: &str| {
        skopeo(
            home.path(),
            &[
                "inspect",
                "--retry-times",
                "0",
                "--cert-dir",
                certs,
                "--creds",
                creds,
                &dest,
            ],
        )
    };
    let (ok, err) = inspect("alice:alice-pw");
    assert!(ok, "inspect over TLS: {err}");
    assert!(!inspect("bob:bob-pw").0, "bob is still refused");
}

#[test]
fn the_drain_is_bounded_by_drain_seconds() {
    use std::io::{Read, Write};
    require("docker-registry");
    require("skopeo");
    let setup = Setup::gateway_with(ACL, USERS, "drain_seconds = 1\n", "");
    let _registry = setup.start_plain_registry();
    let mut gateway = setup.start_gateway();
    let home = tempfile::tempdir().expect("tempdir");
    let image = home.path().join("image");
    oci_image(&image, &noise(32 << 20));
    let (ok, err) = push(
        home.path(),
        &image,
        "admin:admin-pw",
        gateway.port,
        "admin/big:latest",
    );
    assert!(ok, "{err}");
    let manifest = format!(
        "GET /v2/admin/big/manifests/latest HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n",
        basic_auth("admin")
    );
    let (_, _, body) = http(gateway.port, &manifest, b"");
    let manifest: serde_json::Value = serde_json::from_slice(&body).expect("manifest");
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("a layer")
        .to_string();
    // A client that reads the head and then nothing more.
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", gateway.port)).expect("connect");
    write!(
        stalled,
        "GET /v2/admin/big/blobs/{layer} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        basic_auth("admin")
    )
    .expect("request");
    let mut first = [0u8; 1024];
    assert!(stalled.read(&mut first).expect("the head") > 0);
    let started = std::time::Instant::now();
    gateway.signal("TERM");
    let status = gateway
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("it exits although the download never finishes");
    assert!(status.success(), "{status}");
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(5),
        "drain_seconds = 1, exited after {took:?}"
    );
}

#[test]
fn an_interrupted_push_never_leaves_a_manifest_pointing_at_a_missing_blob() {
    use std::io::Write;
    let g = Gateway::start();
    assert!(g.push("alice:alice-pw", "alice/app:latest").0);
    let alice = basic_auth("alice");

    // An upload whose client dies half-way through its only PATCH.
    let (status, head, _) = g.request("POST", "/v2/alice/app/blobs/uploads/", &alice, b"");
    assert_eq!(status, 202, "{head}");
    let location = header(&head, "location").expect("an upload location");
    let path = location
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(location)
        .to_string();
    let layer = noise(1 << 20);
    {
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", g.gateway.port)).expect("connect");
        write!(
            stream,
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {alice}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            layer.len()
        )
        .expect("head");
        stream.write_all(&layer[..layer.len() / 2]).expect("half");
    }
    let digest = format!("sha256:{:x}", Sha256::digest(&layer));

    // A manifest naming that layer, as a client that ignored the failure would send it.
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json\r\n";
    let head = format!(
        "GET /v2/alice/app/manifests/latest HTTP/1.1\r\nHost: x\r\nAuthorization: {alice}\r\n{accept}Connection: close\r\n\r\n"
    );
    let (status, _, body) = http(g.gateway.port, &head, b"");
    assert_eq!(status, 200);
    let mut manifest: serde_json::Value = serde_json::from_slice(&body).expect("manifest");
    manifest["layers"][0]["digest"] = digest.clone().into();
    manifest["layers"][0]["size"] = layer.len().into();
    let manifest = manifest.to_string();
    let head = format!(
        "PUT /v2/alice/app/manifests/broken HTTP/1.1\r\nHost: x\r\nAuthorization: {alice}\r\n\
         Content-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        manifest.len()
    );
    let (status, _, body) = http(g.gateway.port, &head, manifest.as_bytes());
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(errors_code(&body), "MANIFEST_BLOB_UNKNOWN");

    let (status, _, _) = g.request(
        "HEAD",
        &format!("/v2/alice/app/blobs/{digest}"),
        &alice,
        b"",
    );
    assert_eq!(status, 404, "half a layer is no layer");
    let (status, _, _) = g.request("GET", "/v2/alice/app/manifests/broken", &alice, b"");
    assert_eq!(status, 404);
    // The image pushed before is whole.
    let pulled = g.home.path().join("pulled");
    assert!(g.pull("alice:alice-pw", "alice/app:latest", &pulled).0);
}

#[test]
fn passwords_and_tokens_never_reach_the_process_log_or_the_decision_log() {
    require("docker-registry");
    let setup = Setup::gateway_with(ACL, USERS, "", "[log]\ndecisions = \"decisions.jsonl\"\n");
    let _registry = setup.start_plain_registry();
    let log = setup.path("portcullis.log");
    let gateway = setup.start_gateway_logged(&log);
    let port = gateway.port;
    let get = |path: &str, auth: &str| {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        );
        http(port, &head, b"")
    };

    let mut secrets = vec!["alice-pw".to_string(), "guess-1-secret".to_string()];
    for (user, password) in [
        ("alice", "alice-pw"),
        ("alice", "guess-1-secret"),
        ("nobody", "guess-1-secret"),
    ] {
        let auth = basic(user, password);
        get("/v2/alice/app/tags/list", &format!("Basic {auth}"));
        secrets.push(auth);
    }
    let (status, _, body) = get(
        &format!(
            "/token?service={SERVICE}&scope=repository:alice/app:pull,push&offline_token=true"
        ),
        &format!("Basic {}", basic("alice", "alice-pw")),
    );
    assert_eq!(status, 200);
    let issued: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let token = issued["token"].as_str().expect("token").to_string();
    let refresh = issued["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();
    assert_eq!(
        get("/v2/alice/app/tags/list", &format!("Bearer {token}")).0,
        404
    );
    assert_eq!(
        get("/v2/alice/app/tags/list", &format!("Bearer {token}x")).0,
        401
    );
    let form = format!("grant_type=refresh_token&service={SERVICE}&refresh_token={refresh}");
    assert_eq!(crate::util::post_token(port, &form).0, 200);
    // The signatures alone: a log that kept any part of a token after its header would
    // hold them.
    for jwt in [&token, &refresh] {
        secrets.push(jwt.rsplit('.').next().expect("signature").to_string());
        secrets.push(jwt.split('.').nth(1).expect("payload").to_string());
    }

    // Give the decision log's writer thread a moment, then stop the gateway so every line
    // is flushed.
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(gateway);
    let process_log = std::fs::read_to_string(&log).expect("process log");
    let decisions = std::fs::read_to_string(setup.path("decisions.jsonl")).expect("decisions");
    assert!(
        process_log.contains("DEBUG") || process_log.contains("debug"),
        "{process_log}"
    );
    assert!(decisions.lines().count() >= 3, "{decisions}");
    assert!(decisions.contains("\"alice\""), "{decisions}");
    for secret in &secrets {
        assert!(
            !process_log.contains(secret.as_str()),
            "the process log holds {secret}"
        );
        assert!(
            !decisions.contains(secret.as_str()),
            "the decision log holds {secret}"
        );
    }
}

/// Issue 19: a browser that remembers Basic credentials for the gateway (as browser UIs rely
/// on) must not push or delete for a page of another site; registry clients send no
/// `Origin` and are unaffected, and a refused request never reaches the registry.
#[test]
fn a_page_of_another_site_cannot_change_the_registry_with_a_browsers_credentials() {
    let gw = Gateway::start();
    let (ok, err) = gw.push("alice:alice-pw", "alice/app:1");
    assert!(ok, "{err}");
    let send = |method: &str, path: &str, extra: &str| {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n",
            port = gw.gateway.port,
            auth = basic_auth("alice"),
        );
        let (status, _, body) = http(gw.gateway.port, &head, b"");
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let manifest = "/v2/alice/app/manifests/1";
    for (what, headers) in [
        (
            "a foreign Origin",
            "Origin: http://evil.example.invalid\r\n",
        ),
        (
            "a sibling subdomain",
            "Origin: http://ui.127.0.0.1.invalid\r\nSec-Fetch-Site: same-site\r\n",
        ),
        (
            "no Origin but a cross-site fetch",
            "Sec-Fetch-Site: cross-site\r\n",
        ),
    ] {
        let (status, body) = send("POST", "/v2/alice/app/blobs/uploads/", headers);
        assert_eq!(status, 403, "{what}: {body}");
        assert!(
            body.contains("only [server] cors_origins"),
            "{what}: {body}"
        );
        let (status, body) = send("DELETE", manifest, headers);
        assert_eq!(status, 403, "{what}: {body}");
    }
    // The refused DELETE never reached the registry: the tag is still there.
    let (status, _, body) = gw.request("GET", "/v2/alice/app/tags/list", &basic_auth("alice"), b"");
    let tags = String::from_utf8_lossy(&body);
    assert!(
        status == 200 && tags.contains("\"1\""),
        "the tag is still there: {tags}"
    );
    // Reading stays possible (CORS decides what a page may read), and registry clients,
    // which send no Origin, push as before.
    let (status, _) = send(
        "GET",
        "/v2/alice/app/tags/list",
        "Origin: http://evil.example.invalid\r\n",
    );
    assert_eq!(status, 200);
    let (status, body) = send("POST", "/v2/alice/app/blobs/uploads/", "");
    assert_eq!(status, 202, "{body}");
    let own = format!("Origin: http://127.0.0.1:{}\r\n", gw.gateway.port);
    let (status, body) = send("POST", "/v2/alice/app/blobs/uploads/", &own);
    assert_eq!(status, 202, "the gateway's own origin: {body}");
}

/// Issue 24: a cross-repository mount with a Bearer token for the target only is answered as
/// the registry answers it in token mode, a challenge naming both scopes; with the wider
/// token the blob is mounted (201), not uploaded again. A source the policies refuse still
/// becomes a plain upload.
#[test]
fn a_mount_asks_for_the_sources_scope_and_then_mounts() {
    let gw = Gateway::start();
    let (ok, err) = gw.push("alice:alice-pw", "alice/base:latest");
    assert!(ok, "{err}");
    let layer = gw.layer_of("alice/base");
    let mount = format!("/v2/alice/app/blobs/uploads/?mount={layer}&from=alice/base");
    let narrow = gw.bearer("alice", "repository:alice/app:pull,push");
    let (status, head, _) = gw.request("POST", &mount, &narrow, b"");
    assert_eq!(status, 401, "{head}");
    let challenge = header(&head, "www-authenticate").expect("a challenge");
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    let scope = challenge
        .split("scope=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a scope");
    let mut scopes: Vec<&str> = scope.split(' ').collect();
    scopes.sort_unstable();
    assert_eq!(
        scopes,
        [
            "repository:alice/app:pull,push",
            "repository:alice/base:pull"
        ]
    );
    let wide = gw.bearer(
        "alice",
        "repository:alice/app:pull,push&scope=repository:alice/base:pull",
    );
    let (status, head, _) = gw.request("POST", &mount, &wide, b"");
    assert_eq!(status, 201, "mounted: {head}");
    assert_eq!(gw.blob_at_registry("alice/app", &layer), 200);
    // Without credentials, the challenge names both scopes too.
    let (status, head, _) = gw.request("POST", &mount, "", b"");
    assert_eq!(status, 401);
    let challenge = header(&head, "www-authenticate").expect("a challenge");
    assert!(
        challenge.contains("repository:alice/base:pull"),
        "{challenge}"
    );
    // bob may not pull alice/base: his mount becomes a plain upload, as before.
    let bobs = format!("/v2/bob/app/blobs/uploads/?mount={layer}&from=alice/base");
    let bob = gw.bearer(
        "bob",
        "repository:bob/app:pull,push&scope=repository:alice/base:pull",
    );
    let (status, head, _) = gw.request("POST", &bobs, &bob, b"");
    assert_eq!(status, 202, "{head}");
    assert_eq!(gw.blob_at_registry("bob/app", &layer), 404);
}

/// Issue 24: references the registry would read otherwise than the gateway are settled
/// before anything is decided or forwarded; `?tag=` parameters are decided as tag pushes;
/// parameters the gateway does not understand are not passed on to a write.
#[test]
fn references_and_tag_parameters_mean_one_thing_at_the_gateway_and_the_registry() {
    let gw = Gateway::start();
    let (ok, err) = gw.push("alice:alice-pw", "alice/app:1");
    assert!(ok, "{err}");
    let alice = basic_auth("alice");
    for reference in ["sha256:baddigeststring", ".INVALID_MANIFEST_NAME"] {
        let path = format!("/v2/alice/app/manifests/{reference}");
        let (status, _, body) = gw.request("GET", &path, &alice, b"");
        assert_eq!(status, 404, "{reference}");
        assert_eq!(errors_code(&body), "MANIFEST_UNKNOWN", "{reference}");
        // Before any credentials are asked for: it cannot exist for anyone.
        let (status, _, _) = gw.request("HEAD", &path, "", b"");
        assert_eq!(status, 404, "{reference}");
    }
    let (status, _, body) = gw.request(
        "PUT",
        "/v2/alice/app/manifests/.INVALID_MANIFEST_NAME",
        "",
        b"{}",
    );
    assert_eq!(status, 400);
    assert_eq!(errors_code(&body), "TAG_INVALID");

    // A manifest PUT by digest with `?tag=`: each tag is a tag push. protected-tags keeps
    // `v*` for the release group, so alice may not write `v1` this way either.
    let manifest_head = format!(
        "GET /v2/alice/app/manifests/1 HTTP/1.1\r\nHost: x\r\nAuthorization: {alice}\r\nAccept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json\r\nConnection: close\r\n\r\n"
    );
    let (status, head, manifest) = http(gw.gateway.port, &manifest_head, b"");
    assert_eq!(status, 200, "{head}");
    let digest = header(&head, "docker-content-digest")
        .expect("a digest")
        .to_string();
    let media_type = header(&head, "content-type").expect("a type").to_string();
    let put = |query: &str| {
        let head = format!(
            "PUT /v2/alice/app/manifests/{digest}{query} HTTP/1.1\r\nHost: x\r\nAuthorization: {alice}\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            manifest.len()
        );
        let (status, _, body) = http(gw.gateway.port, &head, &manifest);
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let (status, body) = put("?tag=v1");
    assert_eq!(status, 403, "a protected tag by parameter: {body}");
    assert!(body.contains("protected-tags"), "{body}");
    let (status, body) = put("?tag=nightly");
    assert_eq!(status, 201, "{body}");
    let (status, body) = put("?overwrite=true");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not understood"), "{body}");
    let (_, _, tags) = gw.request("GET", "/v2/alice/app/tags/list", &alice, b"");
    assert!(
        !String::from_utf8_lossy(&tags).contains("\"v1\""),
        "no v1 was written"
    );
}

/// Issue 24: a large body sent without credentials (a 4 MiB manifest) is read and dropped
/// up to a bound, and the 401 says `Connection: close`: the client reads the answer instead
/// of a broken pipe.
#[test]
fn a_large_refused_body_gets_its_answer_not_a_broken_pipe() {
    use std::io::{Read, Write};
    let gw = Gateway::start();
    for round in 0..5 {
        let body = vec![b'{'; 4 << 20];
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", gw.gateway.port)).expect("connects");
        let head = format!(
            "PUT /v2/alice/app/manifests/latest HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("the head");
        stream
            .write_all(&body)
            .unwrap_or_else(|e| panic!("round {round}: the body was cut off: {e}"));
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "round {round}: {answer}"
        );
        let head = answer.split("\r\n\r\n").next().unwrap_or_default();
        assert_eq!(header(head, "connection"), Some("close"), "{head}");
    }
}

/// Issue 25: behind a real reverse proxy (nginx, as an Ingress controller is) that ends TLS
/// and names the client, the challenge's realm is the https address clients use, and each
/// client is throttled on its own address, not as the proxy.
#[test]
fn behind_a_reverse_proxy_the_realm_is_https_and_clients_are_throttled_apart() {
    require("nginx");
    require("docker-registry");
    let setup = Setup::gateway_with(ACL, USERS, "trusted_proxies = [\"127.0.0.1/32\"]\n", "");
    let _registry = setup.start_plain_registry();
    let gateway = setup.start_gateway();
    let proxy_port = crate::util::free_port();
    let root = setup.dir.path();
    std::fs::create_dir_all(root.join("nginx")).expect("nginx dir");
    std::fs::write(
        root.join("nginx/nginx.conf"),
        format!(
            "daemon off;\nuser root;\npid {root}/nginx/nginx.pid;\nerror_log {root}/nginx/error.log;\n\
             events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {root}/nginx/body;\n\
             proxy_temp_path {root}/nginx/proxy;\n  server {{\n    listen 127.0.0.1:{proxy_port};\n\
             client_max_body_size 0;\n    location / {{\n      proxy_pass http://127.0.0.1:{gw};\n\
             proxy_set_header Host $host;\n      proxy_set_header X-Forwarded-Proto https;\n\
             proxy_set_header X-Forwarded-Host registry.example.test;\n\
             proxy_set_header X-Forwarded-For $remote_addr;\n      proxy_request_buffering off;\n\
             }}\n  }}\n}}\n",
            root = root.display(),
            gw = gateway.port,
        ),
    )
    .expect("nginx.conf");
    let child = std::process::Command::new("nginx")
        .args(["-e", &root.join("nginx/error.log").display().to_string()])
        .args(["-p", &root.join("nginx").display().to_string()])
        .args(["-c", &root.join("nginx/nginx.conf").display().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nginx runs");
    let mut nginx = crate::util::Daemon(child);
    crate::util::wait_for("nginx", &mut nginx.0, || {
        std::net::TcpStream::connect(("127.0.0.1", proxy_port)).is_ok()
    });
    // A client of its own address: 127.0.0.2, 127.0.0.3, ... (all loopback).
    let from = |source: &str, auth: &str| -> (u16, String) {
        use std::io::{Read, Write};
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a socket");
        let source: std::net::SocketAddr = format!("{source}:0").parse().expect("an address");
        socket.bind(&source.into()).expect("bound");
        let proxy: std::net::SocketAddr = format!("127.0.0.1:{proxy_port}")
            .parse()
            .expect("an address");
        socket.connect(&proxy.into()).expect("connected");
        let mut stream: std::net::TcpStream = socket.into();
        let auth = if auth.is_empty() {
            String::new()
        } else {
            format!("Authorization: {auth}\r\n")
        };
        write!(
            stream,
            "GET /v2/ HTTP/1.1\r\nHost: portcullis.default.svc\r\n{auth}Connection: close\r\n\r\n"
        )
        .expect("sent");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, answer)
    };
    let (status, answer) = from("127.0.0.2", "");
    assert_eq!(status, 401, "{answer}");
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    let challenge = header(head, "www-authenticate").expect("a challenge");
    assert!(
        challenge.starts_with("Bearer realm=\"https://registry.example.test/token\""),
        "{challenge}"
    );
    let wrong = format!("Basic {}", basic("alice", "wrong"));
    for _ in 0..5 {
        assert_eq!(from("127.0.0.2", &wrong).0, 401);
    }
    assert_eq!(
        from("127.0.0.2", &wrong).0,
        429,
        "the guessing client waits"
    );
    let (status, answer) = from("127.0.0.3", &basic_auth("alice"));
    assert_eq!(
        status, 200,
        "another client behind the proxy logs in: {answer}"
    );
}
