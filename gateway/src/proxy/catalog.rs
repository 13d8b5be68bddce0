//! `GET /v2/_catalog` for callers without `registry:catalog:*`: the registry's listing,
//! filtered to the repositories they may pull, paginated like the registry paginates.

use super::RouteError;

/// The registry's page size when the client names none.
const DEFAULT_ENTRIES: usize = 100;
/// A page never holds more than this, whatever `n` asks.
const MAX_ENTRIES: usize = 10_000;
/// Upstream page size while filtering.
pub const UPSTREAM_PAGE: usize = 1_000;

/// `?n=<count>&last=<repository>` of a catalog request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogQuery {
    /// Page size.
    pub n: usize,
    /// The listing continues after this repository.
    pub last: Option<String>,
}

impl CatalogQuery {
    /// Parses the raw query; a missing or unparsable `n` means the registry's default.
    pub fn parse(query: Option<&str>) -> Result<CatalogQuery, RouteError> {
        let mut parsed = CatalogQuery {
            n: DEFAULT_ENTRIES,
            last: None,
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "n" => {
                    parsed.n = value.parse::<usize>().map_err(|_| {
                        RouteError::Invalid(
                            "PAGINATION_NUMBER_INVALID",
                            format!("n = {value:?} is not a page size"),
                        )
                    })?;
                }
                "last" if !value.is_empty() => parsed.last = Some(value.into_owned()),
                _ => {}
            }
        }
        parsed.n = parsed.n.min(MAX_ENTRIES);
        Ok(parsed)
    }

    /// The upstream request for the next page after `cursor`.
    pub fn upstream_path(cursor: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("n", &UPSTREAM_PAGE.to_string());
        if let Some(last) = cursor {
            query.append_pair("last", last);
        }
        format!("/v2/_catalog?{}", query.finish())
    }
}

/// One page of the registry's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPage {
    /// The repositories, in the registry's order.
    pub repositories: Vec<String>,
    /// True when the registry says more follow.
    pub more: bool,
}

impl CatalogPage {
    /// Reads the registry's JSON and `Link` header.
    pub fn from_upstream(
        json: &serde_json::Value,
        link: Option<&str>,
    ) -> Result<CatalogPage, String> {
        let repositories = json
            .get("repositories")
            .and_then(|r| r.as_array())
            .ok_or("the catalog answer has no `repositories` list")?
            .iter()
            .map(|name| {
                name.as_str()
                    .map(str::to_string)
                    .ok_or("a repository name is not a string")
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CatalogPage {
            more: link.is_some_and(|l| l.contains("rel=\"next\"")) && !repositories.is_empty(),
            repositories,
        })
    }
}

/// The `Link` header value pointing at the page after `last`, as the registry writes it.
pub fn next_link(n: usize, last: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("last", last)
        .append_pair("n", &n.to_string())
        .finish();
    format!("</v2/_catalog?{query}>; rel=\"next\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_defaults_like_the_registry_and_is_bounded() {
        assert_eq!(
            CatalogQuery::parse(None),
            Ok(CatalogQuery { n: 100, last: None })
        );
        let q = CatalogQuery::parse(Some("n=2&last=a%2Fb")).expect("parses");
        assert_eq!((q.n, q.last.as_deref()), (2, Some("a/b")));
        assert_eq!(
            CatalogQuery::parse(Some("n=99999999")).map(|q| q.n),
            Ok(MAX_ENTRIES)
        );
        assert!(matches!(
            CatalogQuery::parse(Some("n=-1")),
            Err(RouteError::Invalid("PAGINATION_NUMBER_INVALID", _))
        ));
        assert_eq!(
            CatalogQuery::upstream_path(Some("a/b")),
            "/v2/_catalog?n=1000&last=a%2Fb"
        );
    }

    #[test]
    fn pages_and_links_read_and_write_the_registry_format() {
        let json = serde_json::json!({"repositories": ["a", "b/c"]});
        let page =
            CatalogPage::from_upstream(&json, Some("</v2/_catalog?last=b%2Fc&n=2>; rel=\"next\""))
                .expect("page");
        assert_eq!(page.repositories, ["a", "b/c"]);
        assert!(page.more);
        assert!(!CatalogPage::from_upstream(&json, None).expect("page").more);
        assert!(CatalogPage::from_upstream(&serde_json::json!({"x": 1}), None).is_err());
        assert!(
            CatalogPage::from_upstream(&serde_json::json!({"repositories": [1]}), None).is_err()
        );
        assert_eq!(
            next_link(2, "b/c"),
            "</v2/_catalog?last=b%2Fc&n=2>; rel=\"next\""
        );
    }
}
