//! The local cluster's real node (`deploy/local/node`: containerd + runc, kubelet, kube-proxy,
//! CoreDNS): pods really run there, `kubectl logs`/`exec` reach them through the kubelet, pods talk
//! to each other, to Services by ClusterIP and by DNS name, the host reaches ClusterIPs, Secret
//! volumes follow updates, and kwok's fake nodes only take pods that tolerate their taint.
//!
//! Needs `deploy/local/up` with the real node (root, `DBOP_REAL_NODE` not `off`). Without it every
//! test here fails: the node is not Ready and the test image is not recorded.
//!
//! Pods use the test image `localhost/db-operator/probe:<hash>` that `deploy/local/node up` builds
//! from `deploy/local/node-test/probe.c` and imports (its name is in `<state>/node/probe-image`).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, Pod, PodSpec, Probe, SecretVolumeSource, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use testkit::{await_condition, cluster, wait_for, NotYet, TestNamespace};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NODE_NAME: &str = "dbop-node";
const NODE_IP: &str = "198.18.255.1";
const KWOK_TAINT_KEY: &str = "kwok.x-k8s.io/node";
const KWOK_TAINT_VALUE: &str = "fake";
const POD_READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The kubelet resyncs Secret volumes every `syncFrequency` (10 s here) plus its cache TTL.
const SECRET_UPDATE_TIMEOUT: Duration = Duration::from_secs(150);

fn state_dir() -> PathBuf {
    std::env::var_os("DBOP_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(".local")
        })
}

/// The probe image `deploy/local/node up` imported; panics (fails the test) when there is none.
fn probe_image() -> String {
    let file = state_dir().join("node").join("probe-image");
    let image = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "no real node: cannot read {} ({e}); run deploy/local/up as root without DBOP_REAL_NODE=off",
            file.display()
        )
    });
    let image = image.trim().to_owned();
    assert!(
        image.starts_with("localhost/db-operator/probe:"),
        "unexpected probe image {image:?} in {}",
        file.display()
    );
    image
}

/// Runs kubectl with the admin kubeconfig.
async fn kubectl(args: &[&str]) -> Result<String, String> {
    cluster().await.unwrap().kubectl(args).await
}

/// `kubectl exec <pod> -- /probe <args>` in `ns`; Ok(stdout) or Err(stderr).
async fn exec(ns: &TestNamespace, pod: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["exec", "-n", ns.name(), pod, "--", "/probe"];
    all.extend_from_slice(args);
    kubectl(&all).await
}

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), app.to_owned())])
}

/// A pod running `/probe <args>` with the probe image (never pulled).
fn probe_pod(name: &str, app: &str, args: &[&str]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels(app)),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "probe".into(),
                image: Some(probe_image()),
                image_pull_policy: Some("Never".into()),
                args: Some(args.iter().map(|a| (*a).to_owned()).collect()),
                ..Container::default()
            }],
            termination_grace_period_seconds: Some(1),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// A pod serving `probe <hostname>` on TCP 8080, Ready only once its readiness probe connects.
fn server_pod(name: &str, app: &str) -> Pod {
    let mut pod = probe_pod(name, app, &["serve", "8080"]);
    if let Some(spec) = pod.spec.as_mut() {
        let container = &mut spec.containers[0];
        container.ports = Some(vec![ContainerPort {
            container_port: 8080,
            name: Some("http".into()),
            ..ContainerPort::default()
        }]);
        container.readiness_probe = Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(8080),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(1),
            ..Probe::default()
        });
    }
    pod
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates `pod` and waits until it is Ready; returns it (with its IP and node).
async fn run_pod(ns: &TestNamespace, pod: Pod) -> Pod {
    let pods: Api<Pod> = ns.api();
    let name = pod.metadata.name.clone().unwrap_or_default();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let what = format!("pod {name} to be Ready on the real node");
    await_condition(&pods, &name, POD_READY_TIMEOUT, &what, |p: Option<&Pod>| {
        p.is_some_and(is_ready)
    })
    .await
    .unwrap()
    .unwrap()
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn real_node_is_ready_with_its_address_and_kwok_nodes_are_tainted() {
    let cluster = cluster().await.unwrap();
    let nodes: Api<Node> = Api::all(cluster.client().unwrap());
    let node = await_condition(
        &nodes,
        NODE_NAME,
        Duration::from_secs(60),
        "the real node to be Ready",
        |n: Option<&Node>| {
            n.and_then(|n| n.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        },
    )
    .await
    .unwrap()
    .unwrap();
    let status = node.status.clone().unwrap_or_default();
    let addresses: Vec<(String, String)> = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert!(
        addresses.contains(&("InternalIP".to_owned(), NODE_IP.to_owned())),
        "node addresses {addresses:?}"
    );
    let info = status.node_info.unwrap_or_default();
    assert_eq!(info.kubelet_version, "v1.36.3");
    assert!(
        info.container_runtime_version
            .starts_with("containerd://2.3."),
        "runtime {}",
        info.container_runtime_version
    );
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(taints.is_empty(), "the real node has taints {taints:?}");

    let kwok = nodes.list(&Default::default()).await.unwrap();
    let kwok: Vec<&Node> = kwok
        .items
        .iter()
        .filter(|n| {
            n.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("kwok-node-"))
        })
        .collect();
    assert!(!kwok.is_empty(), "no kwok nodes");
    for node in kwok {
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        assert!(
            taints.iter().any(|t| t.key == KWOK_TAINT_KEY
                && t.value.as_deref() == Some(KWOK_TAINT_VALUE)
                && t.effect == "NoSchedule"),
            "kwok node {:?} taints {taints:?}",
            node.metadata.name
        );
    }
}

#[tokio::test]
async fn pod_runs_on_the_real_node_and_kubectl_logs_and_exec_reach_it() {
    let ns = cluster()
        .await
        .unwrap()
        .namespace("node-pod")
        .await
        .unwrap();
    let started = Instant::now();
    let pod = run_pod(&ns, server_pod("server", "server")).await;
    eprintln!("pod Ready after {:?}", started.elapsed());
    assert_eq!(
        node_of(&pod),
        NODE_NAME,
        "scheduled without a kwok toleration"
    );
    let ip = pod_ip(&pod);
    assert!(
        ip.starts_with("198.18.0."),
        "pod IP {ip:?} outside the node's 198.18.0.0/24"
    );

    let logs = wait_for(
        Duration::from_secs(30),
        "kubectl logs of pod server",
        || async {
            match kubectl(&["logs", "-n", ns.name(), "server"]).await {
                Ok(out) if out.contains("serving on :8080 as server") => Ok(out),
                Ok(out) => Err(NotYet::new(format!("stdout={out:?}"))),
                Err(e) => Err(NotYet::new(e)),
            }
        },
    )
    .await
    .unwrap();
    assert!(logs.contains("serving on :8080"), "{logs}");

    let out = exec(&ns, "server", &["echo", "hello", "from", "exec"])
        .await
        .unwrap();
    assert_eq!(out, "hello from exec\n");
    // The failing command's exit status comes back through the kubelet too.
    let err = exec(&ns, "server", &["cat", "/no/such/file"])
        .await
        .unwrap_err();
    assert!(err.contains("/no/such/file"), "{err}");
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn pods_reach_pods_services_by_cluster_ip_and_dns_name_and_the_host_reaches_cluster_ips() {
    let ns = cluster()
        .await
        .unwrap()
        .namespace("node-net")
        .await
        .unwrap();
    let server = run_pod(&ns, server_pod("server", "web")).await;
    let client = run_pod(&ns, probe_pod("client", "client", &["sleep"])).await;
    assert_eq!(node_of(&client), NODE_NAME);
    let server_ip = pod_ip(&server);

    // Pod to pod, across the bridge.
    let out = exec(&ns, "client", &["get", &server_ip, "8080"])
        .await
        .unwrap();
    assert!(out.ends_with("probe server\n"), "pod-to-pod answer {out:?}");

    let services: Api<Service> = ns.api();
    let service = Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(labels("web")),
            ports: Some(vec![ServicePort {
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let cluster_ip = service.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    assert!(
        cluster_ip.starts_with("198.19."),
        "ClusterIP {cluster_ip:?} outside 198.19.0.0/16"
    );

    // Pod to Service by ClusterIP (kube-proxy programs it once the EndpointSlice exists).
    let out = wait_for(
        Duration::from_secs(60),
        "the Service's ClusterIP to answer from a pod",
        || async {
            exec(&ns, "client", &["get", &cluster_ip, "80"])
                .await
                .map_err(NotYet::new)
        },
    )
    .await
    .unwrap();
    assert!(out.ends_with("probe server\n"), "ClusterIP answer {out:?}");

    // DNS: the short and the fully qualified Service names resolve to the ClusterIP.
    let short = format!("web.{}.svc", ns.name());
    let fqdn = format!("web.{}.svc.cluster.local", ns.name());
    for name in [&short, &fqdn, &"web".to_owned()] {
        let what = format!("{name} to resolve in a pod");
        let out = wait_for(Duration::from_secs(30), &what, || async {
            exec(&ns, "client", &["resolve", name])
                .await
                .map_err(NotYet::new)
        })
        .await
        .unwrap();
        assert_eq!(out.trim(), cluster_ip, "{name} resolved to {out:?}");
    }
    let out = exec(&ns, "client", &["get", &short, "80"]).await.unwrap();
    assert!(
        out.ends_with("probe server\n"),
        "answer through {short}: {out:?}"
    );
    // A name that does not exist does not resolve (and no query leaves the cluster DNS).
    let missing = format!("nope.{}.svc", ns.name());
    assert!(exec(&ns, "client", &["resolve", &missing]).await.is_err());

    // Host to ClusterIP (kube-proxy's OUTPUT rules).
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((cluster_ip.as_str(), 80)),
    )
    .await
    .expect("connect to the ClusterIP from the host timed out")
    .unwrap_or_else(|e| panic!("connect to {cluster_ip}:80 from the host: {e}"));
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("reading the ClusterIP answer timed out")
        .unwrap();
    assert!(
        answer.ends_with("probe server\n"),
        "host-to-ClusterIP answer {answer:?}"
    );
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn secret_volume_update_reaches_the_running_pod() {
    let ns = cluster()
        .await
        .unwrap()
        .namespace("node-secret")
        .await
        .unwrap();
    let secrets: Api<Secret> = ns.api();
    let secret = |value: &str| Secret {
        metadata: ObjectMeta {
            name: Some("creds".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "token".to_owned(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret("first"))
        .await
        .unwrap();
    let mut pod = probe_pod("reader", "reader", &["sleep"]);
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = Some(vec![Volume {
            name: "creds".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("creds".into()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }]);
        spec.containers[0].volume_mounts = Some(vec![VolumeMount {
            name: "creds".into(),
            mount_path: "/creds".into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]);
    }
    run_pod(&ns, pod).await;
    assert_eq!(
        exec(&ns, "reader", &["cat", "/creds/token"]).await.unwrap(),
        "first"
    );

    secrets
        .patch(
            "creds",
            &PatchParams::apply("testkit-node").force(),
            &Patch::Apply(&secret("second")),
        )
        .await
        .unwrap();
    let updated = Instant::now();
    wait_for(
        SECRET_UPDATE_TIMEOUT,
        "the Secret update to reach the pod's volume",
        || async {
            match exec(&ns, "reader", &["cat", "/creds/token"]).await {
                Ok(out) if out == "second" => Ok(()),
                other => Err(NotYet::new(format!("{other:?}"))),
            }
        },
    )
    .await
    .unwrap();
    eprintln!(
        "Secret update visible in the pod after {:?}",
        updated.elapsed()
    );
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn only_pods_that_tolerate_the_kwok_taint_land_on_kwok_nodes() {
    let ns = cluster()
        .await
        .unwrap()
        .namespace("node-placement")
        .await
        .unwrap();
    let pods: Api<Pod> = ns.api();
    // Tolerating the taint and selecting kwok nodes: a fake pod, Ready without running anything
    // (its image does not even exist).
    let mut fake = probe_pod("fake", "fake", &["sleep"]);
    if let Some(spec) = fake.spec.as_mut() {
        spec.containers[0].image = Some("localhost/db-operator/does-not-exist:1".into());
        spec.node_selector = Some(testkit::kwok_node_selector());
        spec.tolerations = Some(testkit::kwok_tolerations());
    }
    let fake = run_pod(&ns, fake).await;
    assert!(
        node_of(&fake).starts_with("kwok-node-"),
        "tolerating pod on {:?}",
        node_of(&fake)
    );

    // Selecting kwok nodes without the toleration: never scheduled.
    let mut refused = probe_pod("refused", "refused", &["sleep"]);
    if let Some(spec) = refused.spec.as_mut() {
        spec.node_selector = Some(testkit::kwok_node_selector());
    }
    pods.create(&PostParams::default(), &refused).await.unwrap();
    let unschedulable = await_condition(
        &pods,
        "refused",
        Duration::from_secs(30),
        "pod refused to be reported unschedulable",
        |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.reason.as_deref() == Some("Unschedulable")
                    })
                })
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(node_of(&unschedulable), "");
    ns.cleanup().await.unwrap();
}
