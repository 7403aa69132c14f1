//! Import from an OpenStreetMap PBF extract: the drivable ways, their
//! one-way rules and speed limits. Data © OpenStreetMap contributors (ODbL);
//! every network imported here is marked so that what shows it credits them.

use std::collections::HashMap;
use std::path::Path;

use osmpbf::{Element, ElementReader};
use xianlu_domain::wire::LatLng;

use crate::{RoadClass, RoadEdge, RoadError, RoadNetwork, distance_m};

/// The credit any map drawn from OpenStreetMap data must show.
pub const ATTRIBUTION: &str = "© OpenStreetMap contributors";

fn class_of(highway: &str) -> Option<RoadClass> {
    Some(match highway {
        "motorway" | "motorway_link" => RoadClass::Motorway,
        "trunk" | "trunk_link" => RoadClass::Trunk,
        "primary" | "primary_link" => RoadClass::Primary,
        "secondary" | "secondary_link" => RoadClass::Secondary,
        "tertiary" | "tertiary_link" => RoadClass::Tertiary,
        "unclassified" | "road" => RoadClass::Unclassified,
        "residential" => RoadClass::Residential,
        "living_street" => RoadClass::LivingStreet,
        "service" => RoadClass::Service,
        _ => return None,
    })
}

/// `maxspeed` in km/h ("50", "30 mph", "walk"…); `None` when unusable.
fn max_speed(text: &str) -> Option<f32> {
    let text = text.trim();
    if let Some(mph) = text.strip_suffix("mph") {
        return mph.trim().parse::<f32>().ok().map(|v| v * 1.609).filter(|v| *v > 0.0);
    }
    match text {
        "walk" => Some(6.0),
        _ => text.parse::<f32>().ok().filter(|v| *v > 0.0 && *v < 200.0),
    }
}

struct Way {
    refs: Vec<i64>,
    class: RoadClass,
    kmh: f32,
    /// 1 forwards only, -1 backwards only, 0 both.
    oneway: i8,
}

/// Reads the drivable road network of a PBF file.
pub fn import(path: &Path) -> Result<RoadNetwork, RoadError> {
    let reader = ElementReader::from_path(path).map_err(|e| RoadError::Unreadable(e.to_string()))?;
    let mut coords: HashMap<i64, LatLng> = HashMap::new();
    let mut ways: Vec<Way> = Vec::new();
    reader
        .for_each(|element| match element {
            Element::Node(n) => {
                coords.insert(n.id(), LatLng { lat: n.lat(), lng: n.lon() });
            }
            Element::DenseNode(n) => {
                coords.insert(n.id(), LatLng { lat: n.lat(), lng: n.lon() });
            }
            Element::Way(w) => {
                let tags: HashMap<&str, &str> = w.tags().collect();
                let Some(class) = tags.get("highway").and_then(|h| class_of(h)) else { return };
                if matches!(tags.get("access").copied(), Some("no" | "private"))
                    || matches!(tags.get("motor_vehicle").copied(), Some("no" | "private"))
                    || tags.get("area").copied() == Some("yes")
                {
                    return;
                }
                let implied = class == RoadClass::Motorway || tags.get("junction").copied() == Some("roundabout");
                let oneway = match tags.get("oneway").copied() {
                    Some("yes" | "1" | "true") => 1,
                    Some("-1" | "reverse") => -1,
                    Some("no" | "0" | "false") => 0,
                    _ if implied => 1,
                    _ => 0,
                };
                let kmh = tags.get("maxspeed").and_then(|s| max_speed(s)).unwrap_or(class.default_kmh());
                ways.push(Way { refs: w.refs().collect(), class, kmh, oneway });
            }
            Element::Relation(_) => {}
        })
        .map_err(|e| RoadError::Unreadable(e.to_string()))?;

    let mut ids: HashMap<i64, u32> = HashMap::new();
    let mut nodes: Vec<LatLng> = Vec::new();
    let mut edges: Vec<RoadEdge> = Vec::new();
    let mut node = |id: i64, nodes: &mut Vec<LatLng>| -> Option<u32> {
        let p = *coords.get(&id)?;
        Some(*ids.entry(id).or_insert_with(|| {
            nodes.push(p);
            (nodes.len() - 1) as u32
        }))
    };
    for way in &ways {
        for pair in way.refs.windows(2) {
            // Ways that leave the extract lose the part outside it.
            let (Some(a), Some(b)) = (node(pair[0], &mut nodes), node(pair[1], &mut nodes)) else { continue };
            let meters = distance_m(nodes[a as usize], nodes[b as usize]) as f32;
            let edge = RoadEdge { from: a, to: b, meters, kmh: way.kmh, class: way.class };
            if way.oneway >= 0 {
                edges.push(edge);
            }
            if way.oneway <= 0 {
                edges.push(RoadEdge { from: b, to: a, ..edge });
            }
        }
    }
    if edges.is_empty() {
        return Err(RoadError::Empty);
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(RoadNetwork { source: format!("OpenStreetMap: {name}"), osm: true, nodes, edges })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_limits_are_read_in_kmh() {
        assert_eq!(max_speed("50"), Some(50.0));
        assert!(max_speed("30 mph").is_some_and(|v| (v - 48.27).abs() < 0.1));
        assert_eq!(max_speed("none"), None);
        assert_eq!(max_speed("-5"), None);
    }
}
