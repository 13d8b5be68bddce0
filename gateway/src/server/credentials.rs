//! What a request says about who sends it: the `Authorization` header, and the client's
//! address behind trusted proxies.

use super::ApiError;
use data_encoding::BASE64;
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use std::net::IpAddr;

/// The credentials of one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    /// No `Authorization` header.
    None,
    /// `Basic base64(user:password)`.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `Bearer <token>`.
    Bearer(String),
}

/// Reads the `Authorization` header; a header that is present but malformed is an error,
/// never the same as no header.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let malformed =
        |why: &str| ApiError::Unauthorized(format!("malformed Authorization header: {why}"));
    let value = value.to_str().map_err(|_| malformed("not ASCII"))?;
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or_else(|| malformed("expected `Basic <base64>` or `Bearer <token>`"))?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(malformed("the Bearer token is empty"));
        }
        return Ok(Credentials::Bearer(rest.to_string()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed("expected `Basic <base64>` or `Bearer <token>`"));
    }
    let decoded = BASE64
        .decode(rest.as_bytes())
        .map_err(|_| malformed("invalid base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed("credentials are not UTF-8"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| malformed("expected user:password"))?;
    Ok(Credentials::Basic {
        user: user.to_string(),
        password: password.to_string(),
    })
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the last address in
/// `X-Forwarded-For` that is not itself a trusted proxy. Untrusted peers cannot pose as
/// anyone else.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            // An unparsable hop ends what can be believed.
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn authorization_schemes() {
        assert_eq!(credentials(&headers(&[])).ok(), Some(Credentials::None));
        assert_eq!(
            credentials(&headers(&[("authorization", "Basic YWxpY2U6cHc6Og==")])).ok(),
            Some(Credentials::Basic {
                user: "alice".into(),
                password: "pw::".into()
            })
        );
        assert_eq!(
            credentials(&headers(&[("authorization", "bearer abc.def.ghi")])).ok(),
            Some(Credentials::Bearer("abc.def.ghi".into()))
        );
        for bad in [
            "Basic !!!",
            "Basic",
            "Bearer ",
            "Digest x",
            "Basic bm9jb2xvbg==",
            "Basic /w==",
        ] {
            let err = credentials(&headers(&[("authorization", bad)])).expect_err(bad);
            assert!(
                err.to_string()
                    .starts_with("malformed Authorization header"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 192.0.2.7, 10.1.1.1")]);
        let peer: IpAddr = "10.0.0.2".parse().expect("ip");
        assert_eq!(client_ip(&xff, peer, &trusted).to_string(), "192.0.2.7");
        let outsider: IpAddr = "198.51.100.9".parse().expect("ip");
        assert_eq!(client_ip(&xff, outsider, &trusted), outsider);
        assert_eq!(
            client_ip(&xff, peer, &[]),
            peer,
            "no proxy is trusted by default"
        );
        let garbage = headers(&[("x-forwarded-for", "6.6.6.6, not-an-ip")]);
        assert_eq!(client_ip(&garbage, peer, &trusted), peer);
    }
}
