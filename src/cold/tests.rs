use super::*;

fn object(path: &str, class: Option<&str>) -> ClassedObject {
    ClassedObject {
        path: path.to_string(),
        size: 100,
        storage_class: class.map(String::from),
        modified_unix_s: 1_000,
    }
}

#[test]
fn only_glacier_and_deep_archive_packs_are_archived() {
    let id = |b: u8| PackId(Id([b; 32]));
    let path = |b: u8| FileKind::Pack.path(&id(b).0);
    let tiers = Tiers::from_listing(&[
        object(&path(1), Some("GLACIER")),
        object(&path(2), Some("DEEP_ARCHIVE")),
        object(&path(3), Some("GLACIER_IR")),
        object(&path(4), Some("STANDARD_IA")),
        object(&path(5), None),
        // Not pack names: never counted as packs.
        object("data/zz/not-a-pack", Some("GLACIER")),
        object(&format!("data/00/{}", id(6).0.to_hex()), Some("GLACIER")),
    ]);
    assert_eq!(tiers.listed, 7);
    assert_eq!(tiers.len(), 2);
    assert!(tiers.is_archived(&id(1)) && tiers.is_archived(&id(2)));
    assert!(!tiers.is_archived(&id(3)) && !tiers.is_archived(&id(4)));
    assert!(!tiers.is_archived(&id(6)), "a pack under the wrong folder");
    let deep = tiers.get(&id(2)).unwrap();
    assert_eq!(deep.min_storage_until(), 1_000 + 180 * 86_400);
    assert_eq!(
        tiers.get(&id(1)).unwrap().min_storage_until(),
        1_000 + 90 * 86_400
    );
}

#[test]
fn minimum_storage_durations_follow_the_design() {
    for (class, days) in [
        ("STANDARD", 0),
        ("STANDARD_IA", 30),
        ("ONEZONE_IA", 30),
        ("GLACIER_IR", 90),
        ("GLACIER", 90),
        ("DEEP_ARCHIVE", 180),
    ] {
        assert_eq!(min_storage_days(class), days, "{class}");
    }
}

#[test]
fn no_lifecycle_means_nothing_is_cold_and_nothing_is_asked() {
    let backend = Backend::open("memory:", true).unwrap();
    assert!(Tiers::list(&backend).unwrap().is_none());
    let tiers = Tiers::default();
    let cold = find_cold(&backend, &tiers, [PackId(Id([1; 32]))]).unwrap();
    assert!(cold.is_empty());
}
