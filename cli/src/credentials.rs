//! The bearer token the CLI sends, found as kubectl finds it: `--token`,
//! else the current context's user in the kubeconfig (`KUBECONFIG`, else
//! `~/.kube/config`): its `token` or `tokenFile`. Client certificates and
//! exec plugins cannot be forwarded; such a user needs `--token` (e.g.
//! `kubectl create token`).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Where the kubeconfig is: the first file of `KUBECONFIG`, else
/// `~/.kube/config`.
fn kubeconfig_path(env: Option<&str>, home: Option<&Path>) -> Option<PathBuf> {
    if let Some(list) = env.filter(|s| !s.is_empty()) {
        return list.split(':').find(|p| !p.is_empty()).map(PathBuf::from);
    }
    home.map(|h| h.join(".kube/config"))
}

/// The token of the current context's user in kubeconfig `text`, or why
/// there is none (to say when the aggregator asks for one).
fn token_of(text: &str, dir: &Path) -> Result<Option<String>, String> {
    let doc: Value =
        serde_norway::from_str(text).map_err(|e| format!("the kubeconfig is not YAML: {e}"))?;
    let Some(context) = doc["current-context"].as_str() else {
        return Ok(None);
    };
    let named = |list: &str, name: &str| -> Value {
        doc[list]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let Some(user) = named("contexts", context)["context"]["user"]
        .as_str()
        .map(str::to_string)
    else {
        return Ok(None);
    };
    let u = &named("users", &user)["user"];
    if let Some(t) = u["token"].as_str().filter(|t| !t.is_empty()) {
        return Ok(Some(t.to_string()));
    }
    if let Some(f) = u["tokenFile"].as_str() {
        let path = dir.join(f);
        return std::fs::read_to_string(&path)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| format!("the kubeconfig's tokenFile {}: {e}", path.display()));
    }
    Ok(None)
}

/// The token to send: `given`, else the kubeconfig's, else none.
pub fn token(given: Option<&str>) -> Result<Option<String>, String> {
    if let Some(t) = given.filter(|t| !t.is_empty()) {
        return Ok(Some(t.to_string()));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let Some(path) = kubeconfig_path(std::env::var("KUBECONFIG").ok().as_deref(), home.as_deref())
    else {
        return Ok(None);
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    token_of(&text, dir).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: b\n\
        contexts:\n- {name: a, context: {cluster: c, user: alice}}\n- {name: b, context: {cluster: c, user: bob}}\n\
        users:\n- {name: alice, user: {token: alice-token}}\n- {name: bob, user: {tokenFile: bob.token}}\n\
        - {name: carol, user: {client-certificate: x.crt}}\n";

    #[test]
    fn the_current_contexts_user_gives_the_token() {
        let dir = std::env::temp_dir().join(format!("netaware-cli-kc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bob.token"), "bob-token\n").unwrap();
        assert_eq!(
            token_of(CONFIG, &dir).unwrap().as_deref(),
            Some("bob-token")
        );
        let alice = CONFIG.replace("current-context: b", "current-context: a");
        assert_eq!(
            token_of(&alice, &dir).unwrap().as_deref(),
            Some("alice-token")
        );
        // A certificate user has no token to forward.
        let carol = CONFIG
            .replace("current-context: b", "current-context: c")
            .replace(
                "{name: b, context: {cluster: c, user: bob}}",
                "{name: c, context: {cluster: c, user: carol}}",
            );
        assert_eq!(token_of(&carol, &dir).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(token_of(CONFIG, &dir).unwrap_err().contains("bob.token"));
        assert!(token_of(": [", &dir).is_err());
    }

    #[test]
    fn kubeconfig_is_found_as_kubectl_finds_it() {
        let home = Path::new("/home/u");
        assert_eq!(
            kubeconfig_path(Some("/a:/b"), Some(home)),
            Some(PathBuf::from("/a"))
        );
        assert_eq!(
            kubeconfig_path(None, Some(home)),
            Some(PathBuf::from("/home/u/.kube/config"))
        );
        assert_eq!(
            kubeconfig_path(Some(""), Some(home)),
            Some(PathBuf::from("/home/u/.kube/config"))
        );
    }
}
