//! A real Kubernetes control plane on loopback: etcd, kube-apiserver,
//! kube-scheduler and kube-controller-manager, upstream code built by
//! `scripts/k8s.sh` (versions in `scripts/k8s.env`). No container engine
//! and no kubelet: Nodes are plain objects made Ready here ([`objects`]),
//! so the scheduler binds pods to them and nothing runs the pods. That is
//! enough to see where the stock scheduler puts a Job on a measured network.
//!
//! Security is set up as a cluster would have it, because the tests check
//! netaware's RBAC and admission policy against it: a secure port with a
//! certificate signed by a CA made at start, client certificates for the
//! admin (setup only), the scheduler, the controller-manager and kubelet
//! identities, a ServiceAccount signing key (TokenRequest and TokenReview
//! work), the Node and RBAC authorizers, and the NodeRestriction admission
//! plugin as kubeadm enables it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tracing::info;

use crate::error::{Error, Result};

pub mod objects;

/// `scripts/k8s.env`: the one place the versions are written.
const VERSIONS: &str = include_str!("../../scripts/k8s.env");

/// The binaries a control plane needs, all from one `scripts/k8s.sh` build.
const BINARIES: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-scheduler",
    "kube-controller-manager",
];

/// How long the API server may take to answer `/readyz` (5–9 s measured on
/// 2 cores; a loaded CI machine is slower).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Sets where the binaries are, instead of the version's cache directory.
pub const ENV_BIN_DIR: &str = "NETAWARE_K8S_BIN";

/// The Kubernetes release the project tests against (`K8S_VERSION` in
/// `scripts/k8s.env`).
pub fn kubernetes_version() -> &'static str {
    VERSIONS
        .lines()
        .find_map(|l| l.strip_prefix("K8S_VERSION="))
        .map(str::trim)
        .unwrap_or("unknown")
}

/// Where `scripts/k8s.sh` puts the binaries of `version`:
/// `$XDG_CACHE_HOME/netaware/k8s-<version>` (or under `~/.cache`).
fn cache_dir(version: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"));
    base.join("netaware").join(format!("k8s-{version}"))
}

/// The control plane's binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// The binaries in `$NETAWARE_K8S_BIN`, else in the version's cache
    /// directory; an error saying how to build them when any is missing.
    pub fn find() -> Result<Self> {
        let dir = std::env::var_os(ENV_BIN_DIR)
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir(kubernetes_version()));
        let missing: Vec<&str> = BINARIES
            .into_iter()
            .filter(|b| !dir.join(b).is_file())
            .collect();
        if missing.is_empty() {
            Ok(Self { dir })
        } else {
            Err(Error::Preflight(format!(
                "no Kubernetes {} control plane in {} ({} missing): build it once with \
                 scripts/k8s.sh (Go needed; about 20 minutes and 3 GB the first time, cached \
                 after), point {ENV_BIN_DIR} at a directory that has it, or run the lab with \
                 --kubernetes double",
                kubernetes_version(),
                dir.display(),
                missing.join(", ")
            )))
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// How a client proves who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A client certificate and key (PEM files) signed by the cluster CA.
    Certificate { cert: PathBuf, key: PathBuf },
    /// A bearer token read from a file (re-read by clients that rotate).
    TokenFile(PathBuf),
}

/// The cluster CA: it signs the API server's serving certificate and every
/// client certificate.
struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_file: PathBuf,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

fn tls_error(e: rcgen::Error) -> Error {
    Error::Run(format!("cannot make a certificate: {e}"))
}

impl Authority {
    fn new(pki: &Path) -> Result<Self> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "netaware-lab-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).map_err(tls_error)?;
        let cert_file = pki.join("ca.crt");
        write_private(&cert_file, &cert.pem())?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_file,
        })
    }

    /// A certificate for `common_name` in `organizations` (Kubernetes reads
    /// them as user and groups), for a server (`hosts`) or a client; written
    /// to `pki/<file>.crt` and `.key`.
    fn sign(
        &self,
        pki: &Path,
        file: &str,
        common_name: &str,
        organizations: &[&str],
        hosts: &[&str],
    ) -> Result<(PathBuf, PathBuf)> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| (*h).to_string()).collect::<Vec<_>>())
                .map_err(tls_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for o in organizations {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if hosts.is_empty() {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(tls_error)?;
        let (cert_file, key_file) = (
            pki.join(format!("{file}.crt")),
            pki.join(format!("{file}.key")),
        );
        write_private(&cert_file, &cert.pem())?;
        write_private(&key_file, &key.serialize_pem())?;
        Ok((cert_file, key_file))
    }
}

/// Where [`serving_certificate`] wrote a CA and a certificate it signed.
#[derive(Debug, Clone)]
pub struct ServingCertificate {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A new CA and a serving certificate signed by it for `hosts` (names or
/// IP addresses), in `dir` as `ca.crt`, `tls.crt` and `tls.key`: what the
/// chart's Secret holds, for the lab's and the tests' aggregators. The
/// [`Renewer`] signs new ones with the same CA.
pub fn serving_certificate(dir: &Path, hosts: &[&str]) -> Result<(ServingCertificate, Renewer)> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Run(format!("cannot create {}: {e}", dir.display())))?;
    let ca = Authority::new(dir)?;
    let renewer = Renewer {
        ca,
        dir: dir.to_path_buf(),
        hosts: hosts.iter().map(|h| (*h).to_string()).collect(),
    };
    let cert = renewer.renew()?;
    Ok((cert, renewer))
}

/// Signs new serving certificates with the CA of [`serving_certificate`].
#[derive(Debug)]
pub struct Renewer {
    ca: Authority,
    dir: PathBuf,
    hosts: Vec<String>,
}

impl Renewer {
    /// A new key and certificate in place of `tls.crt` and `tls.key`.
    pub fn renew(&self) -> Result<ServingCertificate> {
        let hosts: Vec<&str> = self.hosts.iter().map(String::as_str).collect();
        let (cert, key) = self
            .ca
            .sign(&self.dir, "tls", "netaware-aggregator", &[], &hosts)?;
        Ok(ServingCertificate {
            ca: self.ca.cert_file.clone(),
            cert,
            key,
        })
    }
}

/// Write a file only its owner can read (keys, and certificates beside them).
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// A running control plane; stopped (and its processes reaped) on drop.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    server: String,
    /// From the start of [`ControlPlane::start`] to the API server's `/readyz`.
    ready_after: Duration,
    ca: Authority,
    /// The admin's client certificate, signed once: files a kubeconfig
    /// names must not be rewritten under it.
    admin: Credential,
    /// Started first to last; stopped last to first.
    processes: Vec<(&'static str, Child)>,
}

/// What the API server's audit log records: every request of
/// ServiceAccounts and kubelets (who, what, the answer's code), one event
/// per request. Tests read it to see what netaware did, in the server's
/// own words.
const AUDIT_POLICY: &str = r#"{
  "apiVersion": "audit.k8s.io/v1",
  "kind": "Policy",
  "omitStages": ["RequestReceived", "ResponseStarted"],
  "rules": [
    {"level": "Metadata", "userGroups": ["system:serviceaccounts", "system:nodes"]},
    {"level": "None"}
  ]
}"#;

/// Where the control plane's ports come from: below the kernel's ephemeral
/// range (32768–60999 by default), from which tests and the lab take "a
/// free port" by binding port 0 and releasing it. Taking ours there too,
/// etcd once got the port a test had just chosen for the aggregator's
/// query API, and the lab's query client reached etcd.
const PORTS: std::ops::Range<u16> = 20000..32768;

/// `n` distinct loopback TCP ports in [`PORTS`] nothing listens on now.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..1000 {
        if out.len() == n {
            break;
        }
        let p = rand::random_range(PORTS);
        if !out.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            out.push(p);
        }
    }
    if out.len() == n {
        Ok(out)
    } else {
        Err(Error::Run(format!(
            "no {n} free loopback ports in {}..{}",
            PORTS.start, PORTS.end
        )))
    }
}

impl ControlPlane {
    /// Start etcd and the API server in `dir` (state, certificates, logs),
    /// wait until it is ready, then start the scheduler and the
    /// controller-manager.
    pub async fn start(bins: &Binaries, dir: &Path) -> Result<Self> {
        let started = Instant::now();
        let pki = dir.join("pki");
        let logs = dir.join("logs");
        std::fs::create_dir_all(&pki)?;
        std::fs::create_dir_all(&logs)?;
        let dir = std::fs::canonicalize(dir)?;
        let ca = Authority::new(&pki)?;
        let (serving_cert, serving_key) = ca.sign(
            &pki,
            "apiserver",
            "kube-apiserver",
            &[],
            &["127.0.0.1", "localhost", "kubernetes.default.svc"],
        )?;
        // The ServiceAccount token signing key (ES256) and its public half,
        // which verifies the tokens.
        let (sa_key, sa_pub) = (pki.join("sa.key"), pki.join("sa.pub"));
        let sa = KeyPair::generate().map_err(tls_error)?;
        write_private(&sa_key, &sa.serialize_pem())?;
        write_private(&sa_pub, &sa.public_key_pem())?;
        let audit_policy = pki.join("audit-policy.json");
        write_private(&audit_policy, AUDIT_POLICY)?;
        let (cert, key) = ca.sign(
            &pki,
            "admin",
            "netaware-lab-admin",
            &["system:masters"],
            &[],
        )?;
        let admin = Credential::Certificate { cert, key };
        let ports = free_ports(3)?;
        let (etcd_client, etcd_peer, api_port) = (ports[0], ports[1], ports[2]);
        let mut plane = Self {
            server: format!("https://127.0.0.1:{api_port}"),
            dir: dir.clone(),
            ready_after: Duration::ZERO,
            ca,
            admin,
            processes: Vec::new(),
        };
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        plane.spawn(
            "etcd",
            Command::new(bins.path("etcd"))
                .arg("--data-dir")
                .arg(dir.join("etcd"))
                .args(["--name", "default"])
                .args(["--listen-client-urls", &etcd_url])
                .args(["--advertise-client-urls", &etcd_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("default={peer_url}")]),
        )?;
        let mut apiserver = Command::new(bins.path("kube-apiserver"));
        apiserver
            .args(["--etcd-servers", &etcd_url])
            .args(["--bind-address", "127.0.0.1"])
            .args(["--advertise-address", "127.0.0.1"])
            .args(["--secure-port", &api_port.to_string()])
            .arg("--tls-cert-file")
            .arg(&serving_cert)
            .arg("--tls-private-key-file")
            .arg(&serving_key)
            .arg("--client-ca-file")
            .arg(&plane.ca.cert_file)
            .args(["--service-account-issuer", "https://kubernetes.default.svc"])
            .arg("--service-account-key-file")
            .arg(&sa_pub)
            .arg("--service-account-signing-key-file")
            .arg(&sa_key)
            .args(["--api-audiences", "https://kubernetes.default.svc"])
            .args(["--authorization-mode", "Node,RBAC"])
            // Admission as shipped (ValidatingAdmissionPolicy included),
            // plus what kubeadm adds: kubelets may only touch their own Node.
            .args(["--enable-admission-plugins", "NodeRestriction"])
            .args(["--service-cluster-ip-range", "10.96.0.0/16"])
            // No kubernetes Service endpoints: nothing runs in this cluster.
            .args(["--endpoint-reconciler-type", "none"])
            .arg("--audit-policy-file")
            .arg(&audit_policy)
            .arg("--audit-log-path")
            .arg(plane.audit_log());
        plane.spawn("kube-apiserver", &mut apiserver)?;
        plane.write_kubeconfig("admin", &plane.admin)?;
        plane.wait_ready(started).await?;
        plane.ready_after = started.elapsed();

        for (name, user) in [
            ("kube-scheduler", "system:kube-scheduler"),
            ("kube-controller-manager", "system:kube-controller-manager"),
        ] {
            let (cert, key) = plane.ca.sign(&pki, name, user, &[], &[])?;
            let kubeconfig =
                plane.write_kubeconfig(name, &Credential::Certificate { cert, key })?;
            let mut cmd = Command::new(bins.path(name));
            cmd.arg("--kubeconfig").arg(&kubeconfig).args([
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                "0",
            ]);
            if name == "kube-controller-manager" {
                // No kubelet sends heartbeats: the node-lifecycle controller
                // would taint every Node unreachable.
                cmd.args(["--controllers", "*,-node-lifecycle-controller"])
                    .arg("--service-account-private-key-file")
                    .arg(&sa_key)
                    .arg("--root-ca-file")
                    .arg(&plane.ca.cert_file)
                    .arg("--use-service-account-credentials");
            }
            plane.spawn(name, &mut cmd)?;
        }
        info!(server = %plane.server, secs = started.elapsed().as_secs_f64(), "control plane ready");
        Ok(plane)
    }

    fn spawn(&mut self, name: &'static str, cmd: &mut Command) -> Result<()> {
        let log = std::fs::File::create(self.dir.join("logs").join(format!("{name}.log")))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::Run(format!("cannot start {name}: {e}")))?;
        self.processes.push((name, child));
        Ok(())
    }

    /// An error naming the first process that exited, with the end of its
    /// log.
    pub fn check_running(&mut self) -> Result<()> {
        for (name, child) in &mut self.processes {
            if let Ok(Some(status)) = child.try_wait() {
                let log = self.dir.join("logs").join(format!("{name}.log"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                return Err(Error::Run(format!(
                    "{name} exited ({status}); the end of {}:\n{}",
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )));
            }
        }
        Ok(())
    }

    async fn wait_ready(&mut self, started: Instant) -> Result<()> {
        let client = self.client(&self.admin).await?;
        let addr = self.server.trim_start_matches("https://").to_string();
        loop {
            // Until the port is open, a client would only log connection errors.
            let open = tokio::net::TcpStream::connect(&addr).await.is_ok();
            if open {
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| Error::Run(e.to_string()))?;
                if matches!(client.request_text(req).await.as_deref(), Ok("ok")) {
                    return Ok(());
                }
            }
            self.check_running()?;
            if started.elapsed() > READY_TIMEOUT {
                return Err(Error::Run(format!(
                    "kube-apiserver {} after {} s; its log is in {}",
                    if open {
                        "not ready"
                    } else {
                        "did not open its port"
                    },
                    READY_TIMEOUT.as_secs(),
                    self.dir.join("logs").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// (name, pid) of every process, first started first.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.processes.iter().map(|(n, c)| (*n, c.id())).collect()
    }

    /// How long the API server took to become ready.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Where the state, certificates, kubeconfigs and logs are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The API server's audit log: one JSON event per request of a
    /// ServiceAccount or a kubelet.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("logs").join("audit.log")
    }

    /// Every event in [`Self::audit_log`] so far.
    pub fn audit_events(&self) -> Result<Vec<serde_json::Value>> {
        let text = std::fs::read_to_string(self.audit_log())?;
        // The last line may be half written.
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// The CA that signed the API server's certificate, for clients to trust.
    pub fn ca_file(&self) -> &Path {
        &self.ca.cert_file
    }

    /// The cluster admin (group `system:masters`): for setting up, never for
    /// what is under test.
    pub fn admin(&self) -> Credential {
        self.admin.clone()
    }

    /// A kubelet's identity: user `system:node:<node>` in `system:nodes`,
    /// which the Node authorizer and NodeRestriction confine to that Node.
    pub fn kubelet(&self, node: &str) -> Result<Credential> {
        self.user_certificate(
            &format!("kubelet-{node}"),
            &format!("system:node:{node}"),
            &["system:nodes"],
        )
    }

    /// A client certificate for `user` in `groups`.
    pub fn user_certificate(&self, file: &str, user: &str, groups: &[&str]) -> Result<Credential> {
        let (cert, key) = self
            .ca
            .sign(&self.dir.join("pki"), file, user, groups, &[])?;
        Ok(Credential::Certificate { cert, key })
    }

    /// A kubeconfig for this server and `credential`, user and context
    /// called `name`.
    pub fn kubeconfig(&self, name: &str, credential: &Credential) -> kube::config::Kubeconfig {
        use kube::config::{
            AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
        };
        let path_text = |p: &Path| Some(p.display().to_string());
        let auth = match credential {
            Credential::Certificate { cert, key } => AuthInfo {
                client_certificate: path_text(cert),
                client_key: path_text(key),
                ..AuthInfo::default()
            },
            Credential::TokenFile(file) => AuthInfo {
                token_file: path_text(file),
                ..AuthInfo::default()
            },
        };
        Kubeconfig {
            clusters: vec![NamedCluster {
                name: "netaware-lab".into(),
                cluster: Some(Cluster {
                    server: Some(self.server.clone()),
                    certificate_authority: path_text(&self.ca.cert_file),
                    ..Cluster::default()
                }),
                ..NamedCluster::default()
            }],
            auth_infos: vec![NamedAuthInfo {
                name: name.into(),
                auth_info: Some(auth),
                ..NamedAuthInfo::default()
            }],
            contexts: vec![NamedContext {
                name: name.into(),
                context: Some(Context {
                    cluster: "netaware-lab".into(),
                    user: Some(name.into()),
                    ..Context::default()
                }),
                ..NamedContext::default()
            }],
            current_context: Some(name.into()),
            ..Kubeconfig::default()
        }
    }

    /// Write [`Self::kubeconfig`] to `<dir>/<name>.kubeconfig`.
    pub fn write_kubeconfig(&self, name: &str, credential: &Credential) -> Result<PathBuf> {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        let text = serde_json::to_string_pretty(&self.kubeconfig(name, credential))?;
        write_private(&path, &text)?;
        Ok(path)
    }

    /// A client of this server as `credential`.
    pub async fn client(&self, credential: &Credential) -> Result<kube::Client> {
        client_from(self.kubeconfig("client", credential), &self.server).await
    }

    /// Stop every process (the API server drains for a few seconds; after
    /// 10 s, what is left is killed).
    pub fn stop(&mut self) {
        for (_, child) in self.processes.iter().rev() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, child) in self.processes.iter_mut().rev() {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.processes.clear();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| Error::Run(format!("kubeconfig {}: {e}", path.display())))?;
    client_from(kc, &path.display().to_string()).await
}

/// A client from a kubeconfig; `what` names it in errors.
async fn client_from(kc: kube::config::Kubeconfig, what: &str) -> Result<kube::Client> {
    let err = |e: &dyn std::fmt::Display| Error::Run(format!("kubeconfig for {what}: {e}"));
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| err(&e))?;
    kube::Client::try_from(config).map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports = free_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        for (i, p) in ports.iter().enumerate() {
            assert!(PORTS.contains(p), "{p}");
            assert!(!ports[..i].contains(p), "{ports:?}");
        }
        // What tests and the lab take by binding port 0 never overlaps.
        let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap_or_else(|_| "32768 60999".into());
        let low: u16 = ephemeral
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(PORTS.end <= low, "{ephemeral}");
    }

    #[test]
    fn the_version_comes_from_k8s_env() {
        assert!(
            kubernetes_version().starts_with("v1."),
            "{}",
            kubernetes_version()
        );
    }
}
