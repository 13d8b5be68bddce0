//! Browsing: the repositories a person may pull, a repository's tags, an image (manifest,
//! config, referrers) with its `docker pull` line, and deleting one.

use super::{Frame, document};
use crate::console::CATALOG_SECONDS;
use crate::console::manifest::{ImageConfig, Kind, Manifest, Referrer, human_size};
use maud::{Markup, html};

/// Repositories shown per page.
pub const PAGE: usize = 50;

/// `/ui/repositories`: a page of the repositories the person may pull, matching `query`.
pub fn repositories(
    frame: &Frame,
    query: &str,
    names: &[String],
    page: usize,
    more: bool,
) -> Markup {
    let link = |page: usize| {
        let mut params = form_urlencoded::Serializer::new(String::new());
        if !query.is_empty() {
            params.append_pair("q", query);
        }
        params.append_pair("page", &page.to_string());
        format!("/ui/repositories?{}", params.finish())
    };
    let content = html! {
        h1 { "Repositories" }
        form.inline role="search" method="get" action="/ui/repositories" {
            div {
                label for="q" { "Find a repository" }
                input #q type="search" name="q" value=(query) placeholder="part of a name";
            }
            button type="submit" { "Search" }
        }
        p.muted {
            "The repositories you may pull"
            @if !query.is_empty() { ", with " code { (query) } " in their name" }
            ". The registry's list is made again every " (CATALOG_SECONDS)
            " seconds while people browse: a repository pushed just now may take that long to show."
        }
        @if names.is_empty() {
            p #empty { @if page > 1 { "No more repositories." } @else { "None yet." } }
        } @else {
            ul.names #repositories {
                @for name in names {
                    li { a href=(repository_link(name)) { (name) } }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if page > 1 { a rel="prev" href=(link(page - 1)) { "Previous" } }
            @if more { a rel="next" href=(link(page + 1)) { "Next" } }
        }
    };
    document("Repositories", Some(frame), content)
}

/// `/ui/repository?name=...`: a repository's tags.
pub fn repository(
    frame: &Frame,
    name: &str,
    pull_host: &str,
    tags: &[String],
    next: Option<&str>,
    notice: Option<&str>,
) -> Markup {
    let content = html! {
        p.muted { a href="/ui/repositories" { "Repositories" } " /" }
        h1 { (name) }
        @if let Some(notice) = notice {
            p.ok role="status" { (notice) }
        }
        h2 { "Tags" }
        @if tags.is_empty() {
            p #empty { "No tags." }
        } @else {
            div.table {
                table #tags {
                    thead { tr { th scope="col" { "Tag" } th scope="col" { "Pull" } } }
                    tbody {
                        @for tag in tags {
                            tr {
                                td { a href=(manifest_link(name, tag)) { (tag) } }
                                td { (pull_line(&format!("docker pull {pull_host}/{name}:{tag}"))) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(last) = next {
            nav.pager aria-label="Pages" {
                a rel="next" href=(format!("{}&last={}", repository_link(name), encode(last))) { "More tags" }
            }
        }
    };
    document(name, Some(frame), content)
}

/// What the image page shows besides the manifest itself.
pub struct Image<'a> {
    /// The repository.
    pub name: &'a str,
    /// The reference asked for (a tag or a digest).
    pub reference: &'a str,
    /// Where people pull from.
    pub pull_host: &'a str,
    /// The manifest.
    pub manifest: &'a Manifest,
    /// The image's config, when it is an image and the config could be read.
    pub config: Option<&'a ImageConfig>,
    /// The referrers; None when the registry does not serve the referrers API.
    pub referrers: Option<&'a [Referrer]>,
    /// Whether the policies let this person delete it.
    pub deletable: bool,
    /// Its cosign signatures, when `[signatures] keys` are configured (gateway mode): the
    /// keys with a valid signature, or why they could not be read.
    pub signatures: Option<Result<Vec<String>, String>>,
    /// The configured key names.
    pub keys: &'a [String],
    /// For a tag some policy guards with the tag facts: what the policies say to moving it
    /// elsewhere (granted, and the first refusal's reason).
    pub moving: Option<(bool, Option<String>)>,
}

/// `/ui/manifest?name=...&ref=...`: one image or index.
pub fn image(frame: &Frame, image: &Image) -> Markup {
    let manifest = image.manifest;
    let (name, pull_host) = (image.name, image.pull_host);
    let content = html! {
        p.muted {
            a href="/ui/repositories" { "Repositories" } " / "
            a href=(repository_link(name)) { (name) } " /"
        }
        h1 {
            @if image.reference.contains(':') { "Manifest " } @else { "Tag " }
            (image.reference)
        }
        (pull_line(&format!("docker pull {pull_host}/{name}@{}", manifest.digest)))
        dl.facts #facts {
            dt { "Digest" } dd.mono { (manifest.digest) }
            dt { "Media type" } dd.mono { (manifest.media_type) }
            dt { "Size" } dd { (human_size(manifest.size as u64)) " (" (manifest.size) " bytes)" }
            @if let Some(kind) = &manifest.artifact_type {
                dt { "Artifact type" } dd.mono { (kind) }
            }
            @if let Some(subject) = &manifest.subject {
                dt { "Refers to" } dd.mono { a href=(manifest_link(name, subject)) { (subject) } }
            }
            @if let Some(config) = image.config {
                @if let Some(created) = &config.created { dt { "Created" } dd { (created) } }
                @if let Some(platform) = &config.platform { dt { "Platform" } dd { (platform) } }
            }
        }
        @match &manifest.kind {
            Kind::Index(children) => {
                h2 { "Platforms" }
                div.table {
                    table #platforms {
                        thead { tr { th scope="col" { "Platform" } th scope="col" { "Digest" } th scope="col" { "Size" } } }
                        tbody {
                            @for child in children {
                                tr {
                                    td { (child.platform.as_deref().unwrap_or("(not given)")) }
                                    td.mono { a href=(manifest_link(name, &child.descriptor.digest)) { (child.descriptor.digest) } }
                                    td { (human_size(child.descriptor.size)) }
                                }
                            }
                        }
                    }
                }
            }
            Kind::Image { config, layers } => {
                h2 { "Layers" }
                p {
                    (layers.len()) @if layers.len() == 1 { " layer, " } @else { " layers, " }
                    (human_size(layers.iter().fold(0u64, |total, l| total.saturating_add(l.size)))) " compressed; config "
                    span.mono { (config.digest) }
                }
            }
            Kind::Other => {}
        }
        @if let Some(config) = image.config {
            @if !config.labels.is_empty() {
                h2 { "Labels" }
                div.table {
                    table #labels {
                        thead { tr { th scope="col" { "Label" } th scope="col" { "Value" } } }
                        tbody {
                            @for (key, value) in &config.labels {
                                tr { td.mono { (key) } td { (value) } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(signatures) = &image.signatures {
            h2 { "Signatures" }
            @match signatures {
                Ok(keys) if keys.is_empty() => p #signatures { span.error { "No valid signature" } " by a configured key (" (image.keys.join(", ")) ")." }
                Ok(keys) => p #signatures { span.ok { "Signed" } " by " (keys.join(", ")) ": a valid cosign signature over exactly this manifest." }
                Err(why) => p #signatures { span.error { "Signatures not read: " } (why) }
            }
        }
        @if let Some((allowed, why)) = &image.moving {
            h2 { "Tag" }
            @if *allowed {
                p #immutability { "The policies let you move this tag to another manifest." }
            } @else {
                p #immutability { span.error { "Immutable: " } "the policies refuse to move this tag" @if let Some(why) = why { " (" (why) ")" } "." }
            }
        }
        h2 { "Referrers" }
        @match image.referrers {
            None => p.muted #referrers { "The registry does not serve the referrers API (registry 2.x does not), so signatures and SBOMs attached to this image are not listed." }
            Some([]) => p.muted #referrers { "Nothing refers to this image (no signatures, no SBOMs)." }
            Some(referrers) => {
                div.table {
                    table #referrers {
                        thead { tr { th scope="col" { "Type" } th scope="col" { "Digest" } th scope="col" { "Size" } } }
                        tbody {
                            @for referrer in referrers {
                                tr {
                                    td.mono { (referrer.artifact_type.as_deref().unwrap_or(&referrer.descriptor.media_type)) }
                                    td.mono { a href=(manifest_link(name, &referrer.descriptor.digest)) { (referrer.descriptor.digest) } }
                                    td { (human_size(referrer.descriptor.size)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if image.deletable {
            h2 { "Delete" }
            p {
                a.button.secondary href=(delete_link(name, image.reference)) { "Delete " (image.reference) "…" }
            }
        }
    };
    document(&format!("{name}:{}", image.reference), Some(frame), content)
}

/// `/ui/delete?name=...&ref=...`: what will be deleted, and the button that does it.
pub fn confirm_delete(frame: &Frame, name: &str, reference: &str, digest: Option<&str>) -> Markup {
    let content = html! {
        p.muted { a href=(repository_link(name)) { (name) } " /" }
        h1 { "Delete " (reference) "?" }
        @if let Some(digest) = digest {
            p { "The manifest " span.mono { (digest) } " of " strong { (name) } " will be deleted, and with it every tag that points at it. Pulls by these tags or this digest stop working. This cannot be undone." }
        } @else {
            p { "The tag " strong { (reference) } " of " strong { (name) } " will be deleted. The image stays, and any other tag of it. This cannot be undone." }
        }
        form method="post" action="/ui/delete" {
            input type="hidden" name="csrf" value=(frame.csrf);
            input type="hidden" name="name" value=(name);
            input type="hidden" name="ref" value=(reference);
            button.danger type="submit" { "Delete" }
            " "
            a.button.secondary href=(manifest_link(name, reference)) { "Cancel" }
        }
    };
    document("Delete", Some(frame), content)
}

/// A `docker pull` line with its copy button (shown once the script runs).
fn pull_line(command: &str) -> Markup {
    html! {
        div.pull {
            code { (command) }
            button.secondary type="button" data-copy=(command) hidden aria-label=(format!("Copy: {command}")) { "Copy" }
        }
    }
}

/// `/ui/repository?name=...`.
pub fn repository_link(name: &str) -> String {
    format!("/ui/repository?name={}", encode(name))
}

/// `/ui/manifest?name=...&ref=...`.
pub fn manifest_link(name: &str, reference: &str) -> String {
    format!(
        "/ui/manifest?name={}&ref={}",
        encode(name),
        encode(reference)
    )
}

fn delete_link(name: &str, reference: &str) -> String {
    format!("/ui/delete?name={}&ref={}", encode(name), encode(reference))
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
