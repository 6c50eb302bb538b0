//! Object endpoints: GET/HEAD by digest (immutable, ETag, Range), the missing-objects query, a
//! batch fetch streaming many objects in one response, and verified upload, one object or a
//! batch of records at a time.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use format::Digest;
use api::objects::{DigestList, Missing, Stored, Uploaded, RECORDS_CONTENT_TYPE};
use api::ErrorCode;
use axum::extract::rejection::JsonRejection;

use crate::error::AppError;
use crate::state::{blocking, AppState};

/// Most digests one missing-query or batch request may name.
pub const MAX_DIGESTS: usize = 100_000;

fn parse_digest(hex: &str) -> Result<Digest, AppError> {
    hex.parse().map_err(|_| AppError::new(ErrorCode::BadDigest, format!("{hex:?} is not a 64-hex-character digest")))
}

fn read_framed(state: &AppState, digest: Digest) -> impl FnOnce() -> Result<Vec<u8>, AppError> {
    let store = state.store.clone();
    move || match store.get_framed(&digest) {
        Ok(b) => Ok(b),
        Err(cache::GetError::NotFound(_)) => Err(AppError::not_found(format!("no object {digest}"))),
        Err(e) => Err(AppError::internal("reading an object", e)),
    }
}

/// `GET|HEAD /v1/objects/{digest}`: the framed object.
pub async fn get(State(state): State<AppState>, Path(hex): Path<String>, req: axum::extract::Request) -> Result<Response, AppError> {
    // The request by value rather than a `HeaderMap` extractor, which would copy every header.
    let headers = req.headers();
    state.require_read(headers)?;
    let digest = parse_digest(&hex)?;
    let etag = format!("\"{digest}\"");
    let framed = match state.hot_objects.get(&digest) {
        Some(b) => b,
        None => {
            let b = Bytes::from(blocking(read_framed(&state, digest)).await?);
            state.hot_objects.put(digest, b.clone());
            b
        }
    };
    let mut h = match immutable(headers, &etag, "application/vnd.imaged.object") {
        Ok(h) => h,
        Err(not_modified) => return Ok(not_modified),
    };
    let Some(range) = headers.get(header::RANGE) else {
        state.metrics.object_bytes_sent.inc_by(framed.len() as u64);
        return Ok((h, framed).into_response());
    };
    let total = framed.len() as u64;
    match parse_range(range.to_str().unwrap_or(""), total) {
        Some((start, end)) => {
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")).unwrap());
            Ok((StatusCode::PARTIAL_CONTENT, h, framed.slice(start as usize..=end as usize)).into_response())
        }
        None => {
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{total}")).unwrap());
            Ok((StatusCode::RANGE_NOT_SATISFIABLE, h).into_response())
        }
    }
}

/// The headers of a file that never changes (an object, a serving pack, a layout): cacheable
/// for a year, its digest as ETag, ranges accepted; `Err` is the 304 when the request's
/// `If-None-Match` names it.
pub(crate) fn immutable(request: &HeaderMap, etag: &str, kind: &'static str) -> Result<HeaderMap, Response> {
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    h.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex is a valid header"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if request.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return Err((StatusCode::NOT_MODIFIED, h).into_response());
    }
    Ok(h)
}

/// Parses a single `bytes=A-B`, `bytes=A-` or `bytes=-N` range into inclusive bounds.
pub(crate) fn parse_range(value: &str, total: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    if spec.contains(',') || total == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (total.saturating_sub(n), total - 1)
        }
        (s, "") => (s.parse().ok()?, total - 1),
        (s, e) => (s.parse().ok()?, e.parse::<u64>().ok()?.min(total - 1)),
    };
    (start <= end && start < total).then_some((start, end))
}

/// The digests of a missing-query or batch request. A body that is JSON of the right shape
/// but names something other than digests is `bad_digest`.
fn parse_list(list: Result<Json<DigestList>, JsonRejection>) -> Result<Vec<Digest>, AppError> {
    let list = match list {
        Ok(Json(list)) => list,
        Err(JsonRejection::JsonDataError(e)) => return Err(AppError::new(ErrorCode::BadDigest, e.body_text())),
        Err(e) => return Err(e.into()),
    };
    if list.digests.len() > MAX_DIGESTS {
        return Err(AppError::new(ErrorCode::TooManyDigests, format!("at most {MAX_DIGESTS} digests per request")));
    }
    Ok(list.digests)
}

/// `POST /v1/objects/missing` `{"digests": [...]}` → `{"missing": [...]}`. With the publishing
/// token, the digests reported present are pinned: a push is about to publish a generation
/// that needs them, so garbage collection keeps them through the grace period.
pub async fn missing(State(state): State<AppState>, headers: HeaderMap, list: Result<Json<DigestList>, JsonRejection>) -> Result<Response, AppError> {
    state.require_read(&headers)?;
    let digests = parse_list(list)?;
    let pin = state.allowed(&headers, api::users::Permission::Publish);
    let _gc = state.gc_lock.read().await;
    let st = state.clone();
    let missing: Vec<Digest> = blocking(move || {
        let (absent, present): (Vec<Digest>, Vec<Digest>) = digests.iter().partition(|d| !st.store.contains(d));
        if pin && !present.is_empty() {
            st.meta.pin(&present).map_err(|e| AppError::internal("pinning objects", e))?;
        }
        Ok(absent)
    })
    .await?;
    Ok(Json(Missing { missing }).into_response())
}

/// `POST /v1/objects/batch` `{"digests": [...]}` → a stream of records, each the 32-byte
/// digest, a u32 little-endian length and the framed object, for every object present (absent
/// ones are left out; the client sees which arrived).
pub async fn batch(State(state): State<AppState>, headers: HeaderMap, list: Result<Json<DigestList>, JsonRejection>) -> Result<Response, AppError> {
    state.require_read(&headers)?;
    let digests = parse_list(list)?;
    let (store, metrics) = (state.store.clone(), state.metrics.clone());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::task::spawn_blocking(move || {
        for d in digests {
            let Ok(framed) = store.get_framed(&d) else { continue };
            metrics.object_bytes_sent.inc_by(framed.len() as u64);
            if tx.blocking_send(Ok(Bytes::from(format::record::encode(&d, &framed)))).is_err() {
                return; // the client went away
            }
        }
    });
    let stream = tokio_stream_from(rx);
    Ok(([(header::CONTENT_TYPE, RECORDS_CONTENT_TYPE)], Body::from_stream(stream)).into_response())
}

pub(crate) fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `PUT /v1/objects/{digest}`: stores framed bytes after checking they decode to the digest.
pub async fn put(State(state): State<AppState>, Path(hex): Path<String>, headers: HeaderMap, body: Bytes) -> Result<Response, AppError> {
    state.authorize(&headers, api::users::Permission::Publish)?;
    let digest = parse_digest(&hex)?;
    let _gc = state.gc_lock.read().await;
    let st = state.clone();
    let inserted = blocking(move || {
        let verified = st.store.verify(&digest, &body, st.config.max_object_bytes).map_err(|e| refused(&st, e))?;
        st.meta.pin(&[digest]).map_err(|e| AppError::internal("pinning an object", e))?;
        let inserted = st.store.insert_verified(verified).map_err(|e| refused(&st, e))?;
        count_received(&st, &[inserted]);
        Ok(inserted)
    })
    .await?;
    let status = if inserted.new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(Stored { digest, new: inserted.new })).into_response())
}

fn refused(state: &AppState, e: cache::InsertError) -> AppError {
    match e {
        cache::InsertError::Invalid { digest, source } => {
            state.metrics.objects_refused.inc();
            AppError::new(ErrorCode::BadObject, format!("object {digest} refused: {source}"))
        }
        e => AppError::internal("storing an object", e),
    }
}

fn count_received(state: &AppState, inserted: &[cache::Inserted]) {
    for i in inserted.iter().filter(|i| i.new) {
        state.metrics.objects_received.inc();
        state.metrics.object_bytes_received.inc_by(i.stored_len);
    }
}

/// Splits a body of records (32-byte digest, u32 little-endian length, framed object) into
/// its objects; anything that does not end exactly on a record boundary is refused.
pub fn parse_records(body: &[u8]) -> Result<Vec<(Digest, &[u8])>, AppError> {
    let records = format::record::decode_all(body).map_err(|e| match e {
        format::record::RecordError::Truncated { index, .. } => {
            AppError::new(ErrorCode::BadRecords, format!("record {index} is truncated"))
        }
        e @ format::record::RecordError::Oversized { .. } => AppError::new(ErrorCode::BadRecords, e.to_string()),
    })?;
    Ok(records.into_iter().map(|r| (r.digest, r.framed)).collect())
}

/// `POST /v1/objects/upload`: many objects in one body of records (the batch fetch's format).
/// Every record is verified before any is stored; one bad record refuses the whole batch.
/// The batch is written as one pack and made durable before the answer.
pub async fn upload(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, AppError> {
    state.authorize(&headers, api::users::Permission::Publish)?;
    let _gc = state.gc_lock.read().await;
    let st = state.clone();
    let (stored, new) = blocking(move || {
        let records = parse_records(&body)?;
        let mut verified = Vec::with_capacity(records.len());
        for (digest, framed) in &records {
            if !st.store.contains(digest) {
                verified.push(st.store.verify(digest, framed, st.config.max_object_bytes).map_err(|e| refused(&st, e))?);
            }
        }
        let digests: Vec<Digest> = records.iter().map(|(d, _)| *d).collect();
        st.meta.pin(&digests).map_err(|e| AppError::internal("pinning objects", e))?;
        let io = |e| AppError::internal("storing objects", e);
        if verified.len() > 1 {
            st.store.start_pack().map_err(io)?;
        }
        let inserted: Result<Vec<_>, _> = verified.into_iter().map(|v| st.store.insert_verified(v)).collect();
        let inserted = inserted.map_err(|e| refused(&st, e))?;
        st.store.sync().map_err(io)?;
        count_received(&st, &inserted);
        Ok((records.len(), inserted.iter().filter(|i| i.new).count()))
    })
    .await?;
    Ok((StatusCode::OK, Json(Uploaded { stored: stored as u64, new: new as u64 })).into_response())
}
