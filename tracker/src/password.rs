//! argon2id password hashes in PHC form, computed in memory each hashing
//! thread keeps.
//!
//! Parameters: the argon2 crate's defaults, m = 19 MiB, t = 2, p = 1, which
//! are OWASP's recommended minimum for argon2id (Password Storage Cheat
//! Sheet). Hashes made by earlier trackers through `PasswordHasher` are the
//! same PHC strings and verify here, and the other way round.
//!
//! Why not `PasswordHasher`/`PasswordVerifier` directly: they allocate the
//! 19 MiB of blocks afresh for every call. glibc then raises its mmap
//! threshold to that size and serves the next ones from per-thread arenas
//! that never shrink: two hashing threads under a login flood held 224 MiB
//! (48 MiB with the threshold pinned). Here each thread allocates its
//! blocks once and reuses them, so hashing memory is threads × 19 MiB.

use std::cell::RefCell;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Largest memory cost a stored hash may ask for (KiB): a hash from another
/// tracker with absurd parameters is refused rather than allocated.
pub const MAX_M_COST_KIB: u32 = 256 * 1024;

thread_local! {
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` over `n` argon2 blocks owned by this thread.
fn with_blocks<T>(n: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    BLOCKS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < n {
            b.resize(n, Block::default());
        }
        f(&mut b[..n])
    })
}

/// A fresh salted argon2id hash of `password`, as a PHC string.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let params = Params::default();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    with_blocks(params.block_count(), |m| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, m)
    })?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored` (constant-time
/// comparison of the outputs). Anything unparsable is a mismatch.
pub fn verify(password: &str, stored: &str) -> bool {
    let Ok(phc) = PasswordHash::new(stored) else { return false };
    let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else { return false };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm) else { return false };
    let version = match phc.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&phc) else { return false };
    if params.m_cost() > MAX_M_COST_KIB {
        return false;
    }
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else { return false };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let computed = with_blocks(params.block_count(), |m| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, m)
    });
    computed.is_ok() && Output::new(&out).is_ok_and(|o| o == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::{PasswordHasher, PasswordVerifier};

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!h.contains("s3cret"));
        assert!(verify("s3cret", &h));
        assert!(!verify("wrong", &h));
        assert!(!verify("s3cret", "not a phc string"));
        assert_ne!(hash("s3cret").unwrap(), h, "salted");
    }

    #[test]
    fn compatible_with_the_crates_own_hasher() {
        // Hashes stored by trackers before this module verify here…
        let salt = SaltString::generate(&mut OsRng);
        let old = Argon2::default().hash_password(b"pw", &salt).unwrap().to_string();
        assert!(verify("pw", &old));
        assert!(!verify("pW", &old));
        // …and ours verify with the crate's verifier.
        let new = hash("pw").unwrap();
        let parsed = PasswordHash::new(&new).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
    }

    #[test]
    fn absurd_stored_parameters_are_refused_not_allocated() {
        // A real hash with its memory cost swapped for one past the bound.
        let real = hash("pw").unwrap();
        let huge = real.replace("m=19456", &format!("m={}", MAX_M_COST_KIB + 1024));
        assert!(!verify("pw", &huge));
    }
}
