use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::sync::Barrier;

use super::*;
use crate::config::CaFiles;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn generated() -> MitmConfig {
    MitmConfig {
        enabled: true,
        ..MitmConfig::default()
    }
}

#[test]
fn generated_on_first_use_private_and_reused() {
    let data = tempfile::tempdir().unwrap();
    let first = Ca::load_from(&generated(), data.path()).unwrap();
    assert!(first.created());
    let dir = data.path().join("egress-proxy");
    assert_eq!(first.paths_of().cert, dir.join("ca.pem"));
    assert_eq!(first.paths_of().key, dir.join("ca.key"));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&first.paths_of().key), 0o600);
    assert_eq!(mode(&first.paths_of().cert), 0o600);
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");

    let again = Ca::load_from(&generated(), data.path()).unwrap();
    assert!(!again.created());
    assert_eq!(again.fingerprint(), first.fingerprint());
    assert_eq!(again.cert_pem(), first.cert_pem());
}

#[test]
fn the_generated_certificate_is_a_constrained_p256_ca_valid_for_a_year() {
    let data = tempfile::tempdir().unwrap();
    let ca = Ca::load_from(&generated(), data.path()).unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    let constraints = x509.basic_constraints().unwrap().unwrap().value;
    assert!(constraints.ca);
    assert_eq!(constraints.path_len_constraint, Some(0));
    let usage = x509.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign() && !usage.digital_signature());
    assert_eq!(
        x509.public_key()
            .algorithm
            .parameters
            .as_ref()
            .unwrap()
            .as_oid()
            .unwrap(),
        x509_parser::oid_registry::OID_EC_P256
    );
    assert!(
        ca.subject().contains("CN=egress-proxy local CA ("),
        "{}",
        ca.subject()
    );
    assert!(ca.subject().contains("O=egress-proxy"), "{}", ca.subject());
    let days = (ca.not_after() - ca.not_before()).whole_days();
    assert!((365..=366).contains(&days), "{days} days");
    assert!(ca.not_before() < OffsetDateTime::now_utc());
    assert_eq!(ca.fingerprint().len(), 32 * 3 - 1);
}

#[test]
fn a_symlink_planted_at_the_key_is_refused_and_never_written_through() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("egress-proxy");
    fs::create_dir(&dir).unwrap();
    let victim = data.path().join("victim");
    fs::write(&victim, "the attacker reads what is written here").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    symlink(&victim, dir.join("ca.key")).unwrap();
    let err = Ca::load_from(&generated(), data.path()).unwrap_err();
    assert!(matches!(err, CaError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("ca.key"), "{err}");
    // A dangling one too (the attacker's file to be created).
    fs::remove_file(dir.join("ca.key")).unwrap();
    symlink(data.path().join("to-be-created"), dir.join("ca.key")).unwrap();
    assert!(matches!(
        Ca::load_from(&generated(), data.path()).unwrap_err(),
        CaError::Symlink { .. }
    ));
    assert!(!data.path().join("to-be-created").exists());
    // Rotate replaces the link with a file of its own.
    let ca = Ca::rotate_in(&generated(), data.path()).unwrap();
    assert!(fs::symlink_metadata(&ca.paths_of().key).unwrap().is_file());
    assert!(!data.path().join("to-be-created").exists());
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "the attacker reads what is written here"
    );
}

#[test]
fn a_symlinked_directory_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let elsewhere = data.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, data.path().join("egress-proxy")).unwrap();
    let err = Ca::load_from(&generated(), data.path()).unwrap_err();
    assert!(matches!(err, CaError::Dir { .. }), "{err}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn a_key_others_can_read_is_refused_with_the_fix() {
    let data = tempfile::tempdir().unwrap();
    let ca = Ca::load_from(&generated(), data.path()).unwrap();
    for bad in [0o640, 0o604, 0o620, 0o660] {
        fs::set_permissions(&ca.paths_of().key, fs::Permissions::from_mode(bad)).unwrap();
        let err = Ca::load_from(&generated(), data.path()).unwrap_err();
        assert!(
            matches!(err, CaError::KeyExposed { mode, .. } if mode == bad),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
    // The configured key is checked the same way.
    let configured = MitmConfig {
        enabled: true,
        ca: Some(CaFiles {
            cert: ca.paths_of().cert.clone(),
            key: ca.paths_of().key.clone(),
        }),
        upstream_ca: None,
        domains: None,
    };
    assert!(matches!(
        Ca::load(&configured).unwrap_err(),
        CaError::KeyExposed { .. }
    ));
    fs::set_permissions(&ca.paths_of().key, fs::Permissions::from_mode(0o400)).unwrap();
    let loaded = Ca::load(&configured).unwrap();
    assert_eq!(loaded.fingerprint(), ca.fingerprint());
    assert!(!loaded.paths_of().generated);
}

#[test]
fn a_key_of_another_user_is_refused() {
    // Root owns files it did not create only by chown, which needs privilege: there is no
    // other owner to test with as an unprivileged user.
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let ca = Ca::load_from(&generated(), data.path()).unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&ca.paths_of().key, Some(nobody), None).unwrap();
    let err = Ca::load_from(&generated(), data.path()).unwrap_err();
    assert!(
        matches!(err, CaError::KeyNotOwned { owner: 65534, .. }),
        "{err}"
    );
}

#[test]
fn concurrent_first_use_ends_with_one_ca() {
    let data = tempfile::tempdir().unwrap();
    let barrier = Barrier::new(6);
    let fingerprints: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    Ca::load_from(&generated(), data.path())
                        .unwrap()
                        .fingerprint()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        fingerprints.iter().all(|f| *f == fingerprints[0]),
        "{fingerprints:?}"
    );
    let on_disk = Ca::load_from(&generated(), data.path()).unwrap();
    assert_eq!(on_disk.fingerprint(), fingerprints[0]);
}

#[test]
fn rotate_replaces_the_generated_ca_and_refuses_a_configured_one() {
    let data = tempfile::tempdir().unwrap();
    let old = Ca::load_from(&generated(), data.path()).unwrap();
    let new = Ca::rotate_in(&generated(), data.path()).unwrap();
    assert!(new.created());
    assert_ne!(new.fingerprint(), old.fingerprint());
    let loaded = Ca::load_from(&generated(), data.path()).unwrap();
    assert_eq!(loaded.fingerprint(), new.fingerprint());
    assert_eq!(mode(&loaded.paths_of().key), 0o600);

    let configured = MitmConfig {
        enabled: true,
        ca: Some(CaFiles {
            cert: old.paths_of().cert.clone(),
            key: old.paths_of().key.clone(),
        }),
        upstream_ca: None,
        domains: None,
    };
    let err = Ca::rotate_in(&configured, data.path()).unwrap_err();
    assert!(matches!(err, CaError::RotateConfigured { .. }), "{err}");
    assert_eq!(
        Ca::load(&configured).unwrap().fingerprint(),
        new.fingerprint(),
        "refused rotate changed nothing"
    );
}

#[test]
fn an_expired_ca_points_at_rotate() {
    let data = tempfile::tempdir().unwrap();
    let paths = CaPaths::of(&generated(), data.path());
    let _lock = lock(&paths).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let now = OffsetDateTime::now_utc();
    generate::create_with(
        paths,
        key,
        now - Duration::days(400),
        now - Duration::days(35),
    )
    .unwrap();
    drop(_lock);
    let err = Ca::load_from(&generated(), data.path()).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::Expired {
                generated: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("egress-proxy ca rotate"), "{err}");
    assert!(err.to_string().contains("ca.pem"), "{err}");
    Ca::rotate_in(&generated(), data.path()).unwrap();
    Ca::load_from(&generated(), data.path()).unwrap();
}

#[test]
fn configured_files_that_do_not_fit_are_named_in_the_error() {
    let data = tempfile::tempdir().unwrap();
    let a = Ca::load_from(&generated(), data.path()).unwrap();
    let other = tempfile::tempdir().unwrap();
    let b = Ca::load_from(&generated(), other.path()).unwrap();
    let files = |cert: &Path, key: &Path| MitmConfig {
        enabled: true,
        ca: Some(CaFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        upstream_ca: None,
        domains: None,
    };
    let swapped = Ca::load(&files(&a.paths_of().cert, &b.paths_of().key)).unwrap_err();
    assert!(
        matches!(&swapped, CaError::Cert { reason, .. } if reason.contains("does not match")),
        "{swapped}"
    );
    let missing = Ca::load(&files(&data.path().join("nope.pem"), &a.paths_of().key)).unwrap_err();
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
    let garbage = data.path().join("garbage.key");
    crate::private::write(&garbage, b"not a key").unwrap();
    let err = Ca::load(&files(&a.paths_of().cert, &garbage)).unwrap_err();
    assert!(matches!(err, CaError::Key { .. }), "{err}");

    // A leaf (not a CA) given as ca_cert.
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["leaf.test".to_string()])
        .unwrap()
        .self_signed(&leaf_key)
        .unwrap();
    let cert = data.path().join("leaf.pem");
    let key = data.path().join("leaf.key");
    crate::private::write(&cert, leaf.pem().as_bytes()).unwrap();
    crate::private::write(&key, leaf_key.serialize_pem().as_bytes()).unwrap();
    let err = Ca::load(&files(&cert, &key)).unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");
}

#[test]
fn a_certificate_without_its_key_is_regenerated_not_used() {
    let data = tempfile::tempdir().unwrap();
    let first = Ca::load_from(&generated(), data.path()).unwrap();
    fs::remove_file(&first.paths_of().key).unwrap();
    let second = Ca::load_from(&generated(), data.path()).unwrap();
    assert!(second.created());
    assert_ne!(second.fingerprint(), first.fingerprint());
}
