//! CPU core lists ("0-3,8") and pinning threads to them, so the two shards
//! can share one CPU without sharing cores.

#[derive(Debug, thiserror::Error)]
pub enum AffinityError {
    #[error("'{part}' in '{list}' is not a core or a range: write e.g. \"0-3,8\"")]
    BadList { part: String, list: String },
    #[error("core {0} is beyond what the kernel interface takes")]
    TooHigh(usize),
    #[error("cannot run on cores {cores:?}: {source} (cores this process may use: {allowed:?})")]
    Pin {
        cores: Vec<usize>,
        source: std::io::Error,
        allowed: Vec<usize>,
    },
}

/// Parse a core list: comma-separated cores and inclusive ranges; "" is no list.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, AffinityError> {
    let mut out = Vec::new();
    let s = s.trim();
    if s.is_empty() {
        return Ok(out);
    }
    let max = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(libc::CPU_SETSIZE as usize);
    for part in s.split(',') {
        let part = part.trim();
        let bad = || AffinityError::BadList {
            part: part.to_string(),
            list: s.to_string(),
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse::<usize>().map_err(|_| bad())?,
                b.trim().parse::<usize>().map_err(|_| bad())?,
            ),
            None => {
                let c = part.parse::<usize>().map_err(|_| bad())?;
                (c, c)
            }
        };
        if a > b || b >= max {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

static PROCESS_CORES: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();

/// The cores the process could use before any thread was pinned (what a
/// child started from a pinned thread should get back).
pub fn process_cores() -> Vec<usize> {
    PROCESS_CORES.get_or_init(allowed_cores).clone()
}

/// A CPU set of `cores`, ready for sched_setaffinity (e.g. in a child after fork).
pub fn cpu_set(cores: &[usize]) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET stays in bounds.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cores.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        set
    }
}

/// Cores this process may run on now.
pub fn allowed_cores() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the cpu_set_t we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pin the calling thread (and threads it starts later) to `cores`.
/// An empty list changes nothing.
pub fn pin_current_thread(cores: &[usize]) -> Result<(), AffinityError> {
    if cores.is_empty() {
        return Ok(());
    }
    process_cores();
    // SAFETY: CPU_SET/sched_setaffinity on a cpu_set_t we own; cores were
    // bounds-checked by parse_cpu_list (< CPU_SETSIZE).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cores {
            if c >= libc::CPU_SETSIZE as usize {
                return Err(AffinityError::TooHigh(c));
            }
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(AffinityError::Pin {
                cores: cores.to_vec(),
                source: std::io::Error::last_os_error(),
                allowed: allowed_cores(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges_parse() {
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("0-2, 5,1").unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").unwrap_err().to_string().contains("'a'"));
        assert!(parse_cpu_list("99999").is_err());
    }

    #[test]
    fn pinning_a_thread_shows_in_its_mask() {
        let allowed = allowed_cores();
        assert!(!allowed.is_empty());
        let first = allowed[0];
        std::thread::spawn(move || {
            pin_current_thread(&[first]).unwrap();
            assert_eq!(allowed_cores(), vec![first]);
        })
        .join()
        .unwrap();
    }
}
