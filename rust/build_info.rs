//! What was built: crate version, build profile and target, for bug reports (`r1omni-fast env`).

/// Version of the crate (and of the Python package built from it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `"release"` or `"debug"`, from whether debug assertions were compiled in.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Target triple components the library was compiled for.
pub fn target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// Key/value pairs describing the build; native subsystems append their library versions.
pub fn build_info() -> Vec<(String, String)> {
    let mut info = vec![
        ("version".to_string(), VERSION.to_string()),
        ("profile".to_string(), profile().to_string()),
        ("target".to_string(), target().to_string()),
        ("rayon_threads".to_string(), rayon::current_num_threads().to_string()),
    ];
    // --- media: linked FFmpeg library versions ---
    info.extend(crate::media::ffmpeg_versions());
    // --- end media ---
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_names_version_and_profile() {
        let info = build_info();
        let get = |k: &str| info.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("version").as_deref(), Some(VERSION));
        assert!(matches!(get("profile").as_deref(), Some("debug") | Some("release")));
        assert!(get("rayon_threads").unwrap().parse::<usize>().unwrap() >= 1);
    }
}
