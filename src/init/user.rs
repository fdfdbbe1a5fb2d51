//! Resolving `app.user` (`"uid[:gid]"`, `"name[:group]"`) to numeric ids.
//!
//! The release binary is static, so it must not call glibc's NSS
//! (`getpwnam`): this module reads `/etc/passwd` and `/etc/group` itself,
//! which is what a container image has. It never changes credentials; the
//! `child` module applies what it returns, in the forked child. The
//! spec's syntax is config's ([`crate::config::user::parse_spec`], checked
//! at load): config owns names and syntax, init owns what runs.

use std::path::Path;

use crate::config::user::{parse_spec, SyntaxError};

/// The credentials to run the app with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups from /etc/group (the user's memberships).
    pub groups: Vec<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not `"uid[:gid]"` nor `"name[:group]"` (checked at load already).
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    #[error("user {0:?} is not in {1} and is not a number")]
    NoSuchUser(String, String),
    #[error("group {0:?} is not in {1} and is not a number")]
    NoSuchGroup(String, String),
}

/// Resolves a spec against `/etc/passwd` and `/etc/group` under `root`
/// (normally `/`).
pub fn resolve(spec: &str, root: &Path) -> Result<Ids, Error> {
    let spec = parse_spec(spec)?;
    let passwd_path = root.join("etc/passwd");
    let group_path = root.join("etc/group");
    // Read like the config (`crate::config::files`): a FIFO or a device is refused
    // unread and the size is bounded, since exec steps (a keepalive one
    // every `interval`) resolve their user on the runtime's thread. What
    // cannot be read counts as empty: numeric ids still work.
    let text = |path: &Path| {
        crate::config::files::read(path, crate::config::files::MAX_BYTES)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_default()
    };
    let passwd = text(&passwd_path);
    let groups = text(&group_path);

    // passwd: name:x:uid:gid:gecos:home:shell
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .find(|f| f[0] == spec.user || (spec.user.parse::<u32>().is_ok() && f[2] == spec.user));
    let (uid, primary, name) = match (&entry, spec.user.parse::<u32>()) {
        (Some(f), _) => match (f[2].parse(), f[3].parse()) {
            (Ok(uid), Ok(gid)) => (uid, Some(gid), Some(f[0].to_string())),
            _ => {
                return Err(Error::NoSuchUser(
                    spec.user,
                    passwd_path.display().to_string(),
                ))
            }
        },
        (None, Ok(uid)) => (uid, None, None),
        (None, Err(_)) => {
            return Err(Error::NoSuchUser(
                spec.user,
                passwd_path.display().to_string(),
            ))
        }
    };

    // group: name:x:gid:member,member
    let group_entries: Vec<Vec<&str>> = groups
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let gid = match &spec.group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| Error::NoSuchGroup(g.clone(), group_path.display().to_string()))?,
        },
        // No group given: the user's primary group from passwd; a bare
        // uid with no passwd entry gets gid 0 (not gid = uid), as Docker's
        // `--user 1000` does.
        None => primary.unwrap_or(0),
    };
    let mut supplementary = vec![gid];
    if let Some(name) = &name {
        for f in &group_entries {
            let member = f.get(3).is_some_and(|m| m.split(',').any(|m| m == name));
            if member {
                if let Ok(g) = f[2].parse::<u32>() {
                    if !supplementary.contains(&g) {
                        supplementary.push(g);
                    }
                }
            }
        }
    }
    Ok(Ids {
        uid,
        gid,
        groups: supplementary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("mkdir");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www:/var/www:/bin/false\nbroken:x:abc:1::/:/bin/sh\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwww-data:x:33:\nshadow:x:42:www-data,other\n",
        )
        .expect("write");
        dir
    }

    /// An exec step with `user` (a `[[keepalive]]` one every `interval`)
    /// resolves it on the thread that forwards signals and answers
    /// probes: an `/etc/passwd` that is a FIFO must not hold it.
    #[test]
    fn a_fifo_for_passwd_is_not_waited_on() {
        let dir = root();
        for name in ["etc/passwd", "etc/group"] {
            let path = dir.path().join(name);
            std::fs::remove_file(&path).expect("rm");
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            // SAFETY: mkfifo with a valid C string.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        }
        let root_dir = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send((resolve("www-data", &root_dir), resolve("33:33", &root_dir)));
        });
        let (by_name, by_number) = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("resolve blocked on a FIFO");
        assert!(matches!(by_name, Err(Error::NoSuchUser(..))), "{by_name:?}");
        assert_eq!(by_number.map(|ids| ids.uid), Ok(33));
    }

    #[test]
    fn resolves_names_numbers_and_memberships() {
        let r = root();
        assert_eq!(
            resolve("www-data", r.path()),
            Ok(Ids {
                uid: 33,
                gid: 33,
                groups: vec![33, 42]
            })
        );
        assert_eq!(
            resolve("33:42", r.path()),
            Ok(Ids {
                uid: 33,
                gid: 42,
                groups: vec![42]
            })
        );
        assert_eq!(
            resolve("1234", r.path()).map(|i| (i.uid, i.gid)),
            Ok((1234, 0))
        );
        assert_eq!(
            resolve("1234:www-data", r.path()).map(|i| (i.uid, i.gid)),
            Ok((1234, 33))
        );
        assert!(matches!(
            resolve("nobody-here", r.path()),
            Err(Error::NoSuchUser(..))
        ));
        assert!(matches!(
            resolve("www-data:nogroup", r.path()),
            Err(Error::NoSuchGroup(..))
        ));
        assert!(matches!(
            resolve("broken", r.path()),
            Err(Error::NoSuchUser(..))
        ));
    }
}
