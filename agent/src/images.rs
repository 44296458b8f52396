//! The images of a deploy: which image each service ran (reported with a successful deploy's
//! result), and the images a redeploy pins its services to.
//!
//! A redeploy of an earlier deployment names, per service, the image id it ran then
//! ([`ServiceImage::image_id`]). Before anything runs, every one of them must still be on the
//! host: a tag may have moved since, but an id names exactly one image. The override file then
//! sets `image: <id>` on each pinned service, which both Compose v2 and v1 accept as a local
//! image, and on Compose v2 `pull_policy: never` as well, so neither a `build:` section nor a
//! `pull_policy: always|build` in the user's file replaces the pinned image.

use crate::engine::{self, EngineError};
use crate::health::InspectedContainer;
use crate::runner::Redactor;
use shared::protocol::budget;
use shared::runtime::ServiceImage;
use shared::ServiceName;
use std::collections::{BTreeMap, BTreeSet};

/// The images of one deploy's result, together, in bytes of JSON: a project with hundreds of
/// services still gets its result through (images beyond this are left out).
pub const IMAGES_BUDGET: usize = budget::SERVICES;

/// Services pinned to an image id, as the override file writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    /// Service → image id (`sha256:` and 64 hex digits, checked).
    pub images: BTreeMap<ServiceName, String>,
    /// Also write `pull_policy: never` (Compose v2; v1 neither knows it nor needs it).
    pub pull_policy_never: bool,
}

/// Why a redeploy cannot pin its images; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "service {service} ran image {} ({image}) in that deployment, and it is no longer on \
         this host",
        short(image_id)
    )]
    Missing {
        service: ServiceName,
        image: String,
        image_id: String,
    },
    #[error("service {service} is pinned to {image_id:?}, which is not an image id")]
    NotAnId {
        service: ServiceName,
        image_id: String,
    },
    #[error("service {service} is pinned twice")]
    Twice { service: ServiceName },
    #[error("checking the pinned images: {0}")]
    Engine(#[from] EngineError),
}

/// `sha256:0123456789ab…`, for messages.
fn short(image_id: &str) -> String {
    match image_id
        .strip_prefix("sha256:")
        .and_then(|hex| hex.get(..12))
    {
        Some(start) if image_id.len() > "sha256:".len() + 12 => format!("sha256:{start}…"),
        _ => image_id.to_owned(),
    }
}

/// Checks every pinned image is on this host and returns the pins; fails naming the first
/// that is not. Reads the engine, changes nothing.
pub async fn check_pinned(
    pinned: &[ServiceImage],
    pull_policy_never: bool,
    redactor: &Redactor,
) -> Result<Pins, PinError> {
    let images = by_service(pinned)?;
    ensure_present(pinned.iter(), redactor).await?;
    Ok(Pins {
        images,
        pull_policy_never,
    })
}

/// The references a Swarm stack's services are pinned to, service → reference. A pin with a
/// registry digest is pinned by it (`registry/app@sha256:…`), which every node of the Swarm can
/// pull (with the project's registry credentials); one without is pinned by its id, which only
/// an engine that has the image can run, so it must be on this host. Fails like
/// [`check_pinned`]; reads the engine, changes nothing.
pub async fn check_pinned_for_stack(
    pinned: &[ServiceImage],
    redactor: &Redactor,
) -> Result<BTreeMap<ServiceName, String>, PinError> {
    let mut references = by_service(pinned)?;
    let mut local = Vec::new();
    for pin in pinned {
        match pin
            .repo_digest
            .as_deref()
            .filter(|digest| shared::runtime::is_digest_reference(digest))
        {
            Some(digest) => {
                references.insert(pin.service.clone(), digest.to_owned());
            }
            None => local.push(pin),
        }
    }
    ensure_present(local.into_iter(), redactor).await?;
    Ok(references)
}

/// Says, for each pinned service the compose file no longer has, that its pin is not used.
pub fn report_unused_pins<'a>(
    pinned: impl Iterator<Item = &'a ServiceName>,
    services: &BTreeSet<ServiceName>,
    report: &mut impl FnMut(shared::protocol::JobEvent),
) {
    for service in pinned.filter(|service| !services.contains(*service)) {
        let line = format!(
            "service {service} is no longer in the compose file; its pinned image is not used"
        );
        report(shared::protocol::JobEvent::Output { line });
    }
}

/// The pins by service, each checked to be an image id and each service pinned once.
fn by_service(pinned: &[ServiceImage]) -> Result<BTreeMap<ServiceName, String>, PinError> {
    let mut images = BTreeMap::new();
    for pin in pinned {
        if !shared::runtime::is_image_id(&pin.image_id) {
            return Err(PinError::NotAnId {
                service: pin.service.clone(),
                image_id: pin.image_id.clone(),
            });
        }
        if images
            .insert(pin.service.clone(), pin.image_id.clone())
            .is_some()
        {
            return Err(PinError::Twice {
                service: pin.service.clone(),
            });
        }
    }
    Ok(images)
}

/// Fails naming the first of `pins` whose image is not on this host.
async fn ensure_present<'a>(
    pins: impl Iterator<Item = &'a ServiceImage> + Clone,
    redactor: &Redactor,
) -> Result<(), PinError> {
    let ids: BTreeSet<&str> = pins.clone().map(|pin| pin.image_id.as_str()).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = ids.into_iter().collect();
    let present: BTreeSet<String> = engine::images(&ids, redactor)
        .await?
        .into_iter()
        .map(|image| image.id)
        .collect();
    let mut pins = pins;
    if let Some(missing) = pins.find(|pin| !present.contains(&pin.image_id)) {
        return Err(PinError::Missing {
            service: missing.service.clone(),
            image: missing.image.clone(),
            image_id: missing.image_id.clone(),
        });
    }
    Ok(())
}

/// The image each service runs, read from its `containers` (as the deploy last read them); a
/// pinned service keeps the reference it was pinned with (its container was created from the
/// bare id).
pub async fn of_containers(
    containers: &[InspectedContainer],
    pinned: &[ServiceImage],
    redactor: &Redactor,
) -> Result<Vec<ServiceImage>, EngineError> {
    let ids: BTreeSet<&str> = containers
        .iter()
        .map(|container| container.image_id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let images: BTreeMap<String, engine::Image> = engine::images(&ids, redactor)
        .await?
        .into_iter()
        .map(|image| (image.id.clone(), image))
        .collect();
    Ok(service_images(containers, pinned, &images))
}

/// One image per service (its first container's), sorted by service, within
/// [`IMAGES_BUDGET`]; its registry digest is the one of the repository the service names (an
/// image pulled from, or pushed to, several has one each), found among `images` by id.
pub fn service_images(
    containers: &[InspectedContainer],
    pinned: &[ServiceImage],
    images: &BTreeMap<String, engine::Image>,
) -> Vec<ServiceImage> {
    let mut by_service: BTreeMap<ServiceName, ServiceImage> = BTreeMap::new();
    for container in containers {
        let Some(service) = container
            .service()
            .and_then(|service| ServiceName::parse(service).ok())
        else {
            continue;
        };
        if container.image_id.is_empty() || by_service.contains_key(&service) {
            continue;
        }
        let image = pinned
            .iter()
            .find(|pin| pin.service == service && pin.image_id == container.image_id)
            .map_or_else(|| container.image.clone(), |pin| pin.image.clone());
        by_service.insert(
            service.clone(),
            ServiceImage {
                service,
                image_id: container.image_id.clone(),
                repo_digest: images
                    .get(&container.image_id)
                    .and_then(|found| found.repo_digest_of(&image)),
                image,
            },
        );
    }
    within_budget(by_service.into_values())
}

/// The images, in order, as many as fit [`IMAGES_BUDGET`].
pub fn within_budget(all: impl IntoIterator<Item = ServiceImage>) -> Vec<ServiceImage> {
    let mut size = 2;
    let mut images = Vec::new();
    for image in all {
        size += shared::protocol::encoded_len(&image) + 1;
        if size > IMAGES_BUDGET {
            tracing::warn!("a deploy's images do not fit its result; leaving some out");
            break;
        }
        images.push(image);
    }
    images
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_sha256_ids_are_image_ids() {
        let id = format!("sha256:{}", "0a".repeat(32));
        assert!(shared::runtime::is_image_id(&id));
        for bad in [
            "app:1.0".to_owned(),
            "sha256:abc".to_owned(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}\n  build: .", "0".repeat(64)),
            format!("sha512:{}", "0".repeat(64)),
            "0".repeat(64),
        ] {
            assert!(!shared::runtime::is_image_id(&bad), "{bad:?}");
        }
    }

    #[test]
    fn the_missing_image_message_names_the_service_its_id_and_its_reference() {
        let error = PinError::Missing {
            service: ServiceName::parse("web").unwrap(),
            image: "app:1.0".into(),
            image_id: format!("sha256:abcd{}", "0".repeat(60)),
        };
        assert_eq!(
            error.to_string(),
            "service web ran image sha256:abcd00000000… (app:1.0) in that deployment, and it is \
             no longer on this host"
        );
    }

    #[test]
    fn each_service_is_listed_once_and_a_pinned_one_keeps_its_reference() {
        let id = |n: char| format!("sha256:{}", n.to_string().repeat(64));
        let json = serde_json::json!([
            {"Id": "c1", "Image": id('a'), "State": {"Status": "running"},
             "Config": {"Image": "app:2.0", "Labels": {"com.docker.compose.service": "web"}}},
            {"Id": "c2", "Image": id('a'), "State": {"Status": "running"},
             "Config": {"Image": "app:2.0", "Labels": {"com.docker.compose.service": "web"}}},
            {"Id": "c3", "Image": id('b'), "State": {"Status": "running"},
             "Config": {"Image": id('b'), "Labels": {"com.docker.compose.service": "api"}}},
        ]);
        let containers = crate::health::parse_inspected(&json.to_string()).unwrap();
        let pinned = [ServiceImage {
            service: ServiceName::parse("api").unwrap(),
            image: "api:1.0".into(),
            image_id: id('b'),
            repo_digest: None,
        }];
        // The image was pushed to another repository too: the digest shown is the one of the
        // repository the service names.
        let inspected = crate::engine::Image {
            id: id('a'),
            repo_digests: Some(vec![
                "reg.example/mirror@sha256:eeee".to_owned(),
                "app@sha256:ffff".to_owned(),
            ]),
        };
        let inspected = BTreeMap::from([(id('a'), inspected)]);
        let images = service_images(&containers, &pinned, &inspected);
        let listed: Vec<_> = images
            .iter()
            .map(|image| (image.service.as_str(), image.image.as_str()))
            .collect();
        assert_eq!(listed, [("api", "api:1.0"), ("web", "app:2.0")]);
        assert_eq!(images[1].repo_digest.as_deref(), Some("app@sha256:ffff"));
        assert_eq!(images[0].repo_digest, None);
    }
}
