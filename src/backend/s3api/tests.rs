use super::*;

fn api(extra: &[(&str, &str)]) -> S3Api {
    let mut config: Vec<(String, String)> = [
        ("bucket", "my-bucket"),
        ("root", "/repo/one"),
        ("region", "eu-west-1"),
        ("endpoint", "http://127.0.0.1:9000/"),
        ("access_key_id", "AKIDEXAMPLE"),
        (
            "secret_access_key",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        ),
        ("disable_config_load", "true"),
        ("disable_ec2_metadata", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    config.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    S3Api::new(&config, Duration::from_secs(5), 4).unwrap()
}

#[test]
fn urls_path_style_and_virtual_host() {
    let a = api(&[]);
    assert_eq!(a.key("data/ab/abcd"), "repo/one/data/ab/abcd");
    assert_eq!(
        a.url(&a.key("data/ab/x y+z"), &[("versionId", "3/L4kqtJl+c=")]),
        "http://127.0.0.1:9000/my-bucket/repo/one/data/ab/x%20y%2Bz?versionId=3%2FL4kqtJl%2Bc%3D"
    );
    assert_eq!(
        a.url("", &[("list-type", "2"), ("prefix", "repo/one/data/")]),
        "http://127.0.0.1:9000/my-bucket?list-type=2&prefix=repo%2Fone%2Fdata%2F"
    );
    assert_eq!(
        a.url("repo/one/config", &[("restore", "")]),
        "http://127.0.0.1:9000/my-bucket/repo/one/config?restore"
    );
    assert_eq!(a.path_of("repo/one/keys/k"), Some("keys/k".to_string()));
    assert_eq!(a.path_of("repo/other/keys/k"), None);

    let v = api(&[("enable_virtual_host_style", "true"), ("root", "/")]);
    assert_eq!(v.key("config"), "config");
    assert_eq!(
        v.url("config", &[("retention", ""), ("versionId", "v1")]),
        "http://my-bucket.127.0.0.1:9000/config?retention&versionId=v1"
    );
}

#[test]
fn default_endpoint_is_regional_aws() {
    assert_eq!(
        normalize_endpoint(None, "eu-central-1"),
        "https://s3.eu-central-1.amazonaws.com"
    );
    assert_eq!(
        normalize_endpoint(Some("minio.local:9000"), "x"),
        "https://minio.local:9000"
    );
    assert_eq!(normalize_root("/"), "");
    assert_eq!(normalize_root("a/b/"), "a/b/");
}

#[test]
fn content_md5_is_base64_of_md5() {
    // RFC 1321 test vectors, base64-encoded.
    assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
    assert_eq!(content_md5(b"abc"), "kAFQmDzST7DWlj99KOF/cg==");
}

#[test]
fn dates() {
    assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
    assert_eq!(iso8601(1_900_000_000), "2030-03-17T17:46:40Z");
    assert_eq!(
        parse_iso8601("2030-03-17T17:46:40.000Z"),
        Some(1_900_000_000)
    );
    assert_eq!(parse_iso8601("2030-03-17T17:46:40Z"), Some(1_900_000_000));
    assert_eq!(parse_iso8601("garbage"), None);
    assert_eq!(
        parse_http_date("Sun, 17 Mar 2030 17:46:40 GMT"),
        Some(1_900_000_000)
    );
    assert_eq!(parse_http_date(""), None);
}

#[test]
fn restore_header() {
    assert_eq!(parse_restore_header(None), RestoreStatus::NotRequested);
    assert_eq!(
        parse_restore_header(Some("ongoing-request=\"true\"")),
        RestoreStatus::InProgress
    );
    assert_eq!(
        parse_restore_header(Some(
            "ongoing-request=\"false\", expiry-date=\"Sun, 17 Mar 2030 17:46:40 GMT\""
        )),
        RestoreStatus::Available {
            expiry_unix_s: Some(1_900_000_000)
        }
    );
    assert_eq!(
        parse_restore_header(Some("nonsense")),
        RestoreStatus::NotRequested
    );
}

#[test]
fn head_headers() {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("content-length", "1234"),
        ("x-amz-storage-class", "GLACIER"),
        ("x-amz-restore", "ongoing-request=\"true\""),
        ("x-amz-object-lock-mode", "COMPLIANCE"),
        (
            "x-amz-object-lock-retain-until-date",
            "2030-03-17T17:46:40.000Z",
        ),
        ("last-modified", "Sun, 17 Mar 2030 17:46:40 GMT"),
        ("x-amz-version-id", "v-1"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    assert_eq!(
        parse_head(&h),
        ObjectHead {
            size: 1234,
            storage_class: Some("GLACIER".into()),
            restore: RestoreStatus::InProgress,
            lock: Some((RetentionMode::Compliance, 1_900_000_000)),
            last_modified_unix_s: Some(1_900_000_000),
            version_id: Some("v-1".into()),
        }
    );
    // An unversioned bucket says "null"; STANDARD has no class header.
    let mut h = HeaderMap::new();
    h.insert("x-amz-version-id", HeaderValue::from_static("null"));
    let head = parse_head(&h);
    assert_eq!(head.version_id, None);
    assert_eq!(head.storage_class, None);
    assert_eq!(head.lock, None);
}

#[test]
fn request_bodies() {
    assert_eq!(
        xml::retention(RetentionMode::Governance, "2030-03-17T17:46:40Z"),
        "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>GOVERNANCE</Mode><RetainUntilDate>2030-03-17T17:46:40Z</RetainUntilDate></Retention>"
    );
    assert!(xml::restore_request(7, RestoreTier::Bulk)
        .contains("<Days>7</Days><GlacierJobParameters><Tier>Bulk</Tier>"));
    assert_eq!(
        parse_retention_mode("compliance"),
        Some(RetentionMode::Compliance)
    );
    assert_eq!(parse_retention_mode("x"), None);
}

#[test]
fn list_objects_page() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>my-bucket</Name><Prefix>repo/one/data/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
  <Contents><Key>repo/one/data/ab/ab01</Key><LastModified>2030-03-17T17:46:40.000Z</LastModified>
    <ETag>&quot;x&quot;</ETag><Size>434234</Size><StorageClass>GLACIER</StorageClass></Contents>
  <Contents><Key>repo/one/data/cd/cd02</Key><LastModified>2030-03-17T17:46:41.000Z</LastModified>
    <Size>7</Size><StorageClass>STANDARD</StorageClass></Contents>
</ListBucketResult>"#;
    let page = xml::parse_list_objects(body).unwrap();
    assert!(page.truncated);
    assert_eq!(
        page.next.as_deref(),
        Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
    );
    assert_eq!(
        page.objects,
        vec![
            ListedObject {
                path: "repo/one/data/ab/ab01".into(),
                size: 434234,
                storage_class: Some("GLACIER".into()),
                last_modified_unix_s: 1_900_000_000,
            },
            ListedObject {
                path: "repo/one/data/cd/cd02".into(),
                size: 7,
                storage_class: Some("STANDARD".into()),
                last_modified_unix_s: 1_900_000_001,
            },
        ]
    );
    let empty = br#"<ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>0</KeyCount></ListBucketResult>"#;
    let page = xml::parse_list_objects(empty).unwrap();
    assert!(page.objects.is_empty() && !page.truncated);
    // Truncated without a token would loop or cut the listing short.
    assert!(xml::parse_list_objects(
        br#"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>"#
    )
    .is_err());
    assert!(xml::parse_list_objects(b"<ListBucketResult><Contents><Key>").is_err());
    assert!(xml::parse_list_objects(b"\xff\xfe").is_err());
}

#[test]
fn list_versions_page_interleaves_markers() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>my-bucket</Name><Prefix>repo/one/</Prefix><KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker>
  <MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>
  <NextKeyMarker>repo/one/snapshots/s1</NextKeyMarker><NextVersionIdMarker>v3</NextVersionIdMarker>
  <DeleteMarker><Key>repo/one/config</Key><VersionId>m1</VersionId><IsLatest>true</IsLatest>
    <LastModified>2030-03-17T17:46:41.000Z</LastModified><Owner><ID>o</ID></Owner></DeleteMarker>
  <Version><Key>repo/one/config</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest>
    <LastModified>2030-03-17T17:46:40.000Z</LastModified><ETag>&quot;e&quot;</ETag><Size>155</Size>
    <Owner><ID>o</ID></Owner><StorageClass>STANDARD</StorageClass></Version>
  <Version><Key>repo/one/snapshots/s1</Key><VersionId>v3</VersionId><IsLatest>true</IsLatest>
    <LastModified>2030-03-17T17:46:42.000Z</LastModified><Size>99</Size></Version>
  <DeleteMarker><Key>repo/one/snapshots/s1</Key><VersionId>m2</VersionId><IsLatest>false</IsLatest>
    <LastModified>2030-03-17T17:46:40.000Z</LastModified></DeleteMarker>
</ListVersionsResult>"#;
    let page = xml::parse_list_versions(body).unwrap();
    assert!(page.truncated);
    assert_eq!(
        page.next,
        Some(("repo/one/snapshots/s1".to_string(), "v3".to_string()))
    );
    let seen: Vec<(&str, &str, bool, bool, u64, i64)> = page
        .versions
        .iter()
        .map(|v| {
            (
                v.path.as_str(),
                v.version_id.as_str(),
                v.is_latest,
                v.is_delete_marker,
                v.size,
                v.last_modified_unix_s,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("repo/one/config", "m1", true, true, 0, 1_900_000_001),
            ("repo/one/config", "v1", false, false, 155, 1_900_000_000),
            (
                "repo/one/snapshots/s1",
                "v3",
                true,
                false,
                99,
                1_900_000_002
            ),
            ("repo/one/snapshots/s1", "m2", false, true, 0, 1_900_000_000),
        ]
    );
    let last = br#"<ListVersionsResult><IsTruncated>false</IsTruncated></ListVersionsResult>"#;
    let page = xml::parse_list_versions(last).unwrap();
    assert!(page.versions.is_empty() && !page.truncated && page.next.is_none());
}

#[test]
fn error_bodies_and_kinds() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>InvalidObjectState</Code><Message>The operation is not valid for the object's storage class</Message>
<StorageClass>GLACIER</StorageClass><RequestId>r</RequestId></Error>"#;
    let reply = Reply {
        status: 403,
        headers: HeaderMap::new(),
        body: Bytes::from_static(body),
    };
    let e = reply_error(&reply);
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(!e.is_temporary());
    assert!(is_cold_object_error(&e));
    let detail = service_error(&e).unwrap();
    assert_eq!(detail.status, 403);
    assert_eq!(detail.code, "InvalidObjectState");

    // HEAD answers carry no body: the status names the error.
    let e = reply_error(&Reply {
        status: 404,
        headers: HeaderMap::new(),
        body: Bytes::new(),
    });
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(service_error(&e).unwrap().code, "NotFound");

    let e = reply_error(&Reply {
        status: 503,
        headers: HeaderMap::new(),
        body: Bytes::from_static(b"<Error><Code>SlowDown</Code><Message>m</Message></Error>"),
    });
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(e.is_temporary());
    assert!(!is_cold_object_error(&e));

    assert_eq!(error_kind(500, "Whatever"), (ErrorKind::Unexpected, true));
    assert_eq!(
        error_kind(400, "AccessDenied"),
        (ErrorKind::PermissionDenied, false)
    );
    assert_eq!(
        error_kind(404, "NoSuchBucket"),
        (ErrorKind::ConfigInvalid, false)
    );
    assert_eq!(
        error_kind(409, "OperationAborted"),
        (ErrorKind::Unexpected, false)
    );
    assert_eq!(xml::parse_error(b"not xml"), None);

    // OpenDAL keeps the S3 code in its message.
    let opendal_error = StorageError::new(
        ErrorKind::PermissionDenied,
        "S3Error { code: \"InvalidObjectState\", message: \"...\" }",
    );
    assert!(is_cold_object_error(&opendal_error));

    assert!(xml::parse_lock_configuration(
        b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>"
    )
    .unwrap());
    assert!(!xml::parse_lock_configuration(b"<ObjectLockConfiguration/>").unwrap());
}

/// A request to a port nobody listens on is a temporary error (the Retry layer retries it),
/// and the request was signed with the static credentials (no credential chain lookup).
#[test]
fn unreachable_server_is_temporary() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let a = api(&[("endpoint", endpoint.as_str())]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt.block_on(a.head_object("config", None)).unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert!(service_error(&e).is_none());
}
