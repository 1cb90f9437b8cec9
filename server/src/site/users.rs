//! The site's workstation users: kept in the store (a digest of each credential), managed
//! from the command line on a stopped server or by an admin while it runs.

use super::*;

/// A workstation user as the site keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct User {
    /// SHA-256 of the secret, hex.
    pub(super) digest: String,
    /// May change the site's settings (C2, C6).
    pub(super) admin: bool,
}

pub(super) fn user_key(code: &str) -> Vec<u8> {
    let mut k = USERS.to_vec();
    k.extend_from_slice(code.as_bytes());
    k
}

pub(super) fn check_user_code(code: &str) -> Result<()> {
    if code.is_empty()
        || code.len() > 32
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(
            format!("{code:?} is not a user code: 1 to 32 letters, digits, '_' or '-'").into(),
        );
    }
    Ok(())
}

/// A new credential for `code`: what the site keeps (its digest) and what the user is given
/// (`CODE.secret`).
pub(super) fn new_credential(code: &str, admin: bool) -> Result<(Vec<u8>, String)> {
    check_user_code(code)?;
    let secret = crate::auth::new_token()?;
    let user = User {
        digest: crate::auth::hex_digest(&secret),
        admin,
    };
    let bytes = serde_json::to_vec(&user).map_err(|e| e.to_string())?;
    Ok((bytes, format!("{code}.{secret}")))
}

/// The site's workstation users, by code.
pub(super) fn users_in(store: &Store) -> outpost_engine::Result<Vec<UserView>> {
    let mut end = USERS.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    Ok(store
        .snapshot()?
        .local_range(USERS, &end, None)?
        .into_iter()
        .filter_map(|(k, v)| {
            let code = std::str::from_utf8(k.get(USERS.len()..)?).ok()?.to_owned();
            let user: User = serde_json::from_slice(&v).ok()?;
            Some(UserView {
                user: code,
                admin: user.admin,
            })
        })
        .collect())
}

/// `outpost site add-user`: a workstation user and its credential (`USER.secret`), printed
/// once; the site keeps its digest. Adding an existing user gives it a new credential.
pub fn add_user(dir: &Path, code: &str, admin: bool) -> Result<String> {
    let (bytes, credential) = new_credential(code, admin)?;
    let store = crate::data_dir::open(dir)?;
    let key = user_key(code);
    store
        .write(|tx| {
            let op = if tx.local_get(&key)?.is_some() {
                "user given a new credential"
            } else {
                "user added"
            };
            tx.local_put(&key, &bytes)?;
            let mut log = entry(OFFLINE_ADMIN, op, "", code);
            log.fields = Some(serde_json::json!({ "admin": admin }));
            log_put(tx, &mut log)
        })
        .map_err(|e| e.to_string())?;
    Ok(credential)
}

/// Who the workstation log names for users managed from the data directory, server stopped.
pub(super) const OFFLINE_ADMIN: &str = "(outpost site, on the data directory)";

/// `outpost site users`: the site's workstation users (the server stopped; while it runs, an
/// admin user lists them with `outpost client users`).
pub fn list_users(dir: &Path) -> Result<Vec<UserView>> {
    let store = crate::data_dir::open(dir)?;
    Ok(users_in(&store)?)
}

/// `outpost site remove-user`: the user's credential stops working; what it wrote stays, and a
/// reservation it held is released when its lease runs out.
pub fn remove_user(dir: &Path, code: &str) -> Result<()> {
    check_user_code(code)?;
    let store = crate::data_dir::open(dir)?;
    let key = user_key(code);
    let removed = store
        .write(|tx| {
            if tx.local_get(&key)?.is_none() {
                return Ok(false);
            }
            tx.local_remove(&key)?;
            log_put(tx, &mut entry(OFFLINE_ADMIN, "user removed", "", code))?;
            Ok(true)
        })
        .map_err(|e| e.to_string())?;
    if removed {
        Ok(())
    } else {
        Err(format!("{code} is not a workstation user of this site").into())
    }
}
