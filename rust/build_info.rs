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
    // --- media: linked FFmpeg library versions, licence and configure line ---
    info.extend(crate::media::ffmpeg_versions());
    info.extend(ffmpeg_licence());
    // --- end media ---
    info
}

// --- media ---
/// FFmpeg's licence, version and configure line as compiled into the linked libraries (so they
/// are true of what runs, not of what some build step believed), and how it is linked: `static`
/// (the wheel, scripts/build-wheel.sh, feature `static-ffmpeg`) or `shared` (the development
/// build against the system's FFmpeg).
fn ffmpeg_licence() -> Vec<(String, String)> {
    use std::ffi::{c_char, CStr};
    fn text(p: *const c_char) -> String {
        if p.is_null() {
            return String::from("unknown");
        }
        // SAFETY: non-null pointers from the functions below point to static NUL-terminated
        // strings compiled into FFmpeg.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().trim().to_string()
    }
    let linkage = if cfg!(feature = "static-ffmpeg") { "static" } else { "shared" };
    // SAFETY: these functions take no arguments and return compiled-in constant strings.
    unsafe {
        vec![
            ("ffmpeg.version".into(), text(ffmpeg_next::ffi::av_version_info())),
            ("ffmpeg.license".into(), text(ffmpeg_next::ffi::avcodec_license())),
            ("ffmpeg.linkage".into(), linkage.into()),
            ("ffmpeg.configuration".into(), text(ffmpeg_next::ffi::avcodec_configuration())),
        ]
    }
}
// --- end media ---

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

    // --- media ---
    #[test]
    fn build_info_names_ffmpeg_licence_and_configuration() {
        let info = build_info();
        let get = |k: &str| info.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        // The strings FFmpeg's configure writes: "LGPL version 2.1 or later", "GPL version 2 or
        // later", ... (libavutil/ffversion.h via configure's license logic).
        let licence = get("ffmpeg.license").unwrap();
        assert!(licence.contains("GPL version"), "{licence}");
        let configuration = get("ffmpeg.configuration").unwrap();
        assert!(!configuration.is_empty() && configuration != "unknown");
        if cfg!(feature = "static-ffmpeg") {
            assert!(licence.starts_with("LGPL version 2.1"), "{licence}");
            assert!(!configuration.contains("--enable-gpl"), "{configuration}");
            assert!(!configuration.contains("--enable-nonfree"), "{configuration}");
            assert_eq!(get("ffmpeg.linkage").as_deref(), Some("static"));
        } else {
            assert_eq!(get("ffmpeg.linkage").as_deref(), Some("shared"));
        }
    }
    // --- end media ---
}
