//! Who a job runs as: `[exec] run_as` (and `run_as_group`) names an account; a relay running
//! as root has its supervisors start each job as that account, so job code cannot read the
//! relay's config, database, secrets or other jobs' logs.

use std::ffi::{CStr, CString};

/// A resolved account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Looks `user` up (a name or a numeric uid), and `group` if given (else the user's own).
pub fn resolve(user: &str, group: Option<&str>) -> Result<JobUser, String> {
    let mut found =
        lookup_user(user).ok_or_else(|| format!("no account `{user}` on this machine"))?;
    if let Some(group) = group {
        found.gid =
            lookup_group(group).ok_or_else(|| format!("no group `{group}` on this machine"))?;
    }
    Ok(found)
}

fn lookup_user(user: &str) -> Option<JobUser> {
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = match user.parse::<u32>() {
        // SAFETY: getpwuid_r(3) into buffers this function owns.
        Ok(uid) => unsafe {
            libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut result)
        },
        Err(_) => {
            let name = CString::new(user).ok()?;
            // SAFETY: getpwnam_r(3) with a NUL-terminated name, into buffers owned here.
            unsafe {
                libc::getpwnam_r(
                    name.as_ptr(),
                    &mut entry,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut result,
                )
            }
        }
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success the entry's strings point into `buf`, alive here.
    let text = |p: *const libc::c_char| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    Some(JobUser {
        name: text(entry.pw_name),
        uid: entry.pw_uid,
        gid: entry.pw_gid,
        home: text(entry.pw_dir),
    })
}

fn lookup_group(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Some(gid);
    }
    let name = CString::new(group).ok()?;
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r(3) with a NUL-terminated name, into buffers owned here.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(entry.gr_gid)
}

/// Whether this process runs as root (and so can start jobs as another account).
pub fn relay_is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_resolve_by_name_and_number() {
        let root = resolve("root", None).unwrap();
        assert_eq!((root.uid, root.gid, root.name.as_str()), (0, 0, "root"));
        assert_eq!(resolve("0", Some("0")).unwrap().uid, 0);
        assert!(resolve("no-such-account-here", None).is_err());
        assert!(resolve("root", Some("no-such-group-here")).is_err());
    }
}
