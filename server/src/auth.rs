//! Network credentials: one per site, made when central creates the site. A credential reads
//! `CODE.secret` (the site's establishment code, a dot, 64 hex digits of randomness); central
//! keeps only the SHA-256 digest of the secret, so a copy of central's store does not let anyone
//! act as a site.

use outpost_engine::{Site, SiteDirectory, SiteId, Store};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// A new credential for `site` and the digest central keeps of it.
pub fn new_credential(site: &Site) -> crate::Result<(String, Vec<u8>)> {
    let mut secret = [0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| crate::Error::Random)?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let digest = digest_of(&hex);
    Ok((format!("{}.{hex}", site.code), digest))
}

/// A random token of 64 hex digits (a monitor session).
pub fn new_token() -> crate::Result<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| crate::Error::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A random identity: a deployment's (see `central::deployment_id`), a remote store's (see
/// `replicator::incarnation`).
pub fn random_id() -> crate::Result<u64> {
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| crate::Error::Random)?;
    Ok(u64::from_le_bytes(bytes))
}

/// The SHA-256 digest of a secret, hex (what a site keeps of its workstation users' secrets).
pub fn hex_digest(secret: &str) -> String {
    digest_of(secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `secret` has the hex digest `kept`, comparing in constant time.
pub fn digests_match(kept: &str, secret: &str) -> bool {
    equal_in_constant_time(kept.as_bytes(), hex_digest(secret).as_bytes())
}

fn digest_of(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// Why a credential was not accepted (told to the log; to the client only when it is a removed
/// site's own credential, [`Denied::Removed`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No credential was presented.
    Missing,
    /// Not of the form `CODE.secret`.
    Malformed,
    /// No site has this code.
    UnknownSite(String),
    /// The site has no credential (made before credentials existed, or revoked).
    NoCredential(String),
    /// The secret is wrong.
    WrongSecret(String),
    /// The site's own credential, but the site was removed from the deployment at `at_ms`
    /// (`central remove-remote`): the one refusal the client is told the reason of, since the
    /// credential proves it is that shop.
    Removed {
        /// Its code.
        code: String,
        /// Its id.
        site: SiteId,
        /// When it was removed (UTC ms).
        at_ms: u64,
    },
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::Missing => f.write_str("no credential"),
            Denied::Malformed => f.write_str("a malformed credential"),
            Denied::UnknownSite(c) => write!(f, "a credential for unknown site {c}"),
            Denied::NoCredential(c) => write!(f, "site {c} has no credential"),
            Denied::WrongSecret(c) => write!(f, "a wrong secret for site {c}"),
            Denied::Removed { code, .. } => {
                write!(f, "site {code} was removed from this deployment")
            }
        }
    }
}

/// The site a presented credential (`Authorization: Bearer CODE.secret`) authenticates. The
/// sites come from `sites` (the daemon's copy, so that authenticating never waits for a long
/// write), the digests from a snapshot of the store.
pub fn authenticate(
    store: &Store,
    sites: &SiteDirectory,
    presented: Option<&str>,
) -> Result<Site, Denied> {
    let presented = presented.ok_or(Denied::Missing)?;
    let token = presented
        .strip_prefix("Bearer ")
        .ok_or(Denied::Malformed)?
        .trim();
    let (code, secret) = token.split_once('.').ok_or(Denied::Malformed)?;
    let site = sites
        .by_code(code)
        .cloned()
        .ok_or_else(|| Denied::UnknownSite(code.to_owned()))?;
    let kept = outpost_replicator::central::credential_digest(store, site.id)
        .ok()
        .flatten()
        .ok_or_else(|| Denied::NoCredential(code.to_owned()))?;
    if !equal_in_constant_time(&kept, &digest_of(secret)) {
        return Err(Denied::WrongSecret(code.to_owned()));
    }
    match outpost_replicator::central::retired(store, site.id) {
        Ok(None) => Ok(site),
        Ok(Some(at_ms)) => Err(Denied::Removed {
            code: code.to_owned(),
            site: site.id,
            at_ms,
        }),
        Err(_) => Err(Denied::NoCredential(code.to_owned())),
    }
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn s2_a_credential_is_its_site_code_and_a_secret_central_keeps_only_the_digest_of() {
        let site = Site::remote(2, "BSOC").unwrap();
        let (cred, digest) = new_credential(&site).unwrap();
        let (code, secret) = cred.split_once('.').unwrap();
        assert_eq!(code, "BSOC");
        assert_eq!(secret.len(), 64);
        assert_eq!(digest, digest_of(secret));
        assert!(
            !digest
                .windows(8)
                .any(|w| secret.as_bytes().windows(8).any(|s| s == w))
        );
        let (other, _) = new_credential(&site).unwrap();
        assert_ne!(cred, other, "each credential is drawn afresh");
        assert!(equal_in_constant_time(&digest, &digest_of(secret)));
        assert!(!equal_in_constant_time(&digest, &digest_of("0")));
    }
}
