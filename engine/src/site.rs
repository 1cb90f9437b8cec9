//! Sites (SPEC S1, C1): one central and any number of remotes, each an establishment.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A site's small numeric id (SPEC S1: BSOC = 2, CSOC = 3). Central has one too.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct SiteId(pub u16);

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}", self.0)
    }
}

/// An establishment code such as `ASOC` or `BSOC`: 1 to 16 characters, `A-Z`, `0-9`, `_`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EstablishmentCode(String);

/// The longest establishment code accepted.
pub const ESTABLISHMENT_CODE_LEN_MAX: usize = 16;

impl EstablishmentCode {
    /// Validates and wraps a code.
    pub fn new(code: &str) -> Result<Self, SiteError> {
        let valid = !code.is_empty()
            && code.len() <= ESTABLISHMENT_CODE_LEN_MAX
            && code
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(Self(code.to_owned()))
        } else {
            Err(SiteError::InvalidCode(code.to_owned()))
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EstablishmentCode {
    type Error = SiteError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<EstablishmentCode> for String {
    fn from(value: EstablishmentCode) -> Self {
        value.0
    }
}

impl fmt::Display for EstablishmentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a site is the central site or a remote one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Role {
    /// The one central site (SPEC S1).
    Central,
    /// A remote site: a full local copy that syncs now and then (SPEC S2).
    Remote,
}

/// One establishment: its id, code and role.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Site {
    /// The small numeric id.
    pub id: SiteId,
    /// The establishment code.
    pub code: EstablishmentCode,
    /// Central or remote.
    pub role: Role,
}

impl Site {
    /// The central site.
    pub fn central(id: u16, code: &str) -> Result<Self, SiteError> {
        Ok(Self {
            id: SiteId(id),
            code: EstablishmentCode::new(code)?,
            role: Role::Central,
        })
    }

    /// A remote site.
    pub fn remote(id: u16, code: &str) -> Result<Self, SiteError> {
        Ok(Self {
            id: SiteId(id),
            code: EstablishmentCode::new(code)?,
            role: Role::Remote,
        })
    }

    /// True for the central site.
    pub fn is_central(&self) -> bool {
        self.role == Role::Central
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code, self.id)
    }
}

/// What is wrong with a site or the directory of sites.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SiteError {
    /// The code is empty, too long or has characters outside `A-Z 0-9 _`.
    #[error("invalid establishment code {0:?}: 1 to 16 characters among A-Z, 0-9 and _")]
    InvalidCode(String),
    /// A second central site (SPEC S1: exactly one central).
    #[error("site {new} cannot be central: {existing} already is (exactly one central site)")]
    SecondCentral {
        /// The central already registered.
        existing: String,
        /// The site refused.
        new: String,
    },
    /// The id is taken by another establishment.
    #[error("site id {id} is already used by {existing}")]
    DuplicateId {
        /// The id.
        id: SiteId,
        /// The establishment that has it.
        existing: String,
    },
    /// The code is taken by another site id.
    #[error("establishment code {code} is already used by site {existing}")]
    DuplicateCode {
        /// The code.
        code: String,
        /// The id that has it.
        existing: SiteId,
    },
}

/// The sites a store knows. Invariant: at most one central; ids and codes unique.
#[derive(Clone, Default, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SiteDirectory {
    sites: BTreeMap<SiteId, Site>,
}

impl SiteDirectory {
    /// Adds a site, or confirms one already present with the same id, code and role.
    pub fn add(&mut self, site: Site) -> Result<(), SiteError> {
        if let Some(existing) = self.sites.get(&site.id) {
            if *existing == site {
                return Ok(());
            }
            return Err(SiteError::DuplicateId {
                id: site.id,
                existing: existing.to_string(),
            });
        }
        if let Some(existing) = self.sites.values().find(|s| s.code == site.code) {
            return Err(SiteError::DuplicateCode {
                code: site.code.to_string(),
                existing: existing.id,
            });
        }
        if site.is_central()
            && let Some(central) = self.central()
        {
            return Err(SiteError::SecondCentral {
                existing: central.to_string(),
                new: site.to_string(),
            });
        }
        self.sites.insert(site.id, site);
        Ok(())
    }

    /// The site with this id.
    pub fn get(&self, id: SiteId) -> Option<&Site> {
        self.sites.get(&id)
    }

    /// The site with this establishment code.
    pub fn by_code(&self, code: &str) -> Option<&Site> {
        self.sites.values().find(|s| s.code.as_str() == code)
    }

    /// The central site, once known.
    pub fn central(&self) -> Option<&Site> {
        self.sites.values().find(|s| s.is_central())
    }

    /// All sites, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Site> {
        self.sites.values()
    }

    /// How many sites are known.
    pub fn len(&self) -> usize {
        self.sites.len()
    }

    /// True when no site is known.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s1_exactly_one_central() {
        let mut dir = SiteDirectory::default();
        dir.add(Site::central(1, "ASOC").unwrap()).unwrap();
        dir.add(Site::remote(2, "BSOC").unwrap()).unwrap();
        let err = dir.add(Site::central(9, "ZSOC").unwrap()).unwrap_err();
        assert!(matches!(err, SiteError::SecondCentral { .. }), "{err}");
        assert!(matches!(
            dir.add(Site::remote(2, "CSOC").unwrap()),
            Err(SiteError::DuplicateId { .. })
        ));
        assert!(matches!(
            dir.add(Site::remote(3, "BSOC").unwrap()),
            Err(SiteError::DuplicateCode { .. })
        ));
        // Re-adding the same site is a no-op.
        dir.add(Site::remote(2, "BSOC").unwrap()).unwrap();
        assert_eq!(dir.len(), 2);
        assert_eq!(dir.central().unwrap().code.as_str(), "ASOC");
    }

    #[test]
    fn establishment_codes_are_validated() {
        assert!(EstablishmentCode::new("BSOC").is_ok());
        assert!(EstablishmentCode::new("").is_err());
        assert!(EstablishmentCode::new("bsoc").is_err());
        assert!(EstablishmentCode::new("B-SOC").is_err());
        assert!(EstablishmentCode::new(&"A".repeat(17)).is_err());
    }
}
