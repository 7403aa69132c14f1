//! The vector map: roads from the server's map data, the courier's trail
//! and position, the route left and the destination, drawn as SVG in a
//! local projection. No tiles, no internet; the data's credit is shown
//! whenever the data asks for one.

use dioxus::prelude::*;
use xianlu_domain::wire::LatLng;

/// What the map shows. Coordinates are WGS-84.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MapLayers {
    /// Road lines by class (`primary`, `residential`, …).
    pub roads: Vec<(String, Vec<LatLng>)>,
    pub trail: Vec<LatLng>,
    pub route: Vec<LatLng>,
    pub courier: Option<LatLng>,
    pub destination: Option<LatLng>,
    /// Other stops (a courier's route, a merchant's couriers).
    pub stops: Vec<LatLng>,
    /// The credit the map data requires, e.g. "© OpenStreetMap contributors".
    pub attribution: Option<String>,
    /// A raster tile service's URL template (`…/{z}/{x}/{y}.png`, WGS-84 web
    /// mercator), drawn under the roads where a deployment has one.
    pub tile_url: Option<String>,
}

const WIDTH: f64 = 1000.0;

/// A box around the points that matter, with a margin, in degrees.
pub fn frame(points: &[LatLng], margin: f64) -> Option<[f64; 4]> {
    let first = points.first()?;
    let mut b = [first.lng, first.lat, first.lng, first.lat];
    for p in points {
        b = [b[0].min(p.lng), b[1].min(p.lat), b[2].max(p.lng), b[3].max(p.lat)];
    }
    // At least about a kilometre across.
    let pad_lat = ((b[3] - b[1]) * margin).max(0.005);
    let pad_lng = ((b[2] - b[0]) * margin).max(0.005 / first.lat.to_radians().cos().max(0.1));
    Some([b[0] - pad_lng, b[1] - pad_lat, b[2] + pad_lng, b[3] + pad_lat])
}

/// Projects WGS-84 onto the SVG's x/y (equirectangular around the box's middle latitude).
struct Projection {
    bbox: [f64; 4],
    scale_x: f64,
    height: f64,
}

impl Projection {
    fn new(bbox: [f64; 4]) -> Projection {
        let mid = ((bbox[1] + bbox[3]) / 2.0).to_radians().cos();
        let w = (bbox[2] - bbox[0]) * mid;
        let h = bbox[3] - bbox[1];
        let height = if w > 0.0 { WIDTH * h / w } else { WIDTH };
        Projection { bbox, scale_x: WIDTH / (bbox[2] - bbox[0]).max(1e-9), height }
    }

    fn xy(&self, p: LatLng) -> (f64, f64) {
        let x = (p.lng - self.bbox[0]) * self.scale_x;
        let y = (self.bbox[3] - p.lat) / (self.bbox[3] - self.bbox[1]).max(1e-9) * self.height;
        (x, y)
    }

    fn points(&self, line: &[LatLng]) -> String {
        let mut out = String::with_capacity(line.len() * 14);
        for p in line {
            let (x, y) = self.xy(*p);
            out.push_str(&format!("{x:.1},{y:.1} "));
        }
        out
    }
}

fn road_width(class: &str) -> &'static str {
    match class {
        "motorway" | "trunk" => "7",
        "primary" => "5",
        "secondary" => "4",
        "tertiary" => "3",
        _ => "2",
    }
}

/// The raster tiles covering a box: (url, west, south, east, north), at most 36.
pub fn tiles(template: &str, bbox: [f64; 4]) -> Vec<(String, [f64; 4])> {
    use std::f64::consts::PI;
    let width = (bbox[2] - bbox[0]).max(1e-6);
    // About four tiles across the map.
    let z = (4.0 * 360.0 / width).log2().floor().clamp(0.0, 19.0) as u32;
    let n = f64::from(1u32 << z);
    let x_of = |lng: f64| ((lng + 180.0) / 360.0 * n).floor().clamp(0.0, n - 1.0) as u32;
    let y_of = |lat: f64| {
        let r = lat.clamp(-85.0, 85.0).to_radians();
        ((1.0 - (r.tan() + 1.0 / r.cos()).ln() / PI) / 2.0 * n).floor().clamp(0.0, n - 1.0) as u32
    };
    let lng_of = |x: u32| f64::from(x) / n * 360.0 - 180.0;
    let lat_of = |y: u32| (PI * (1.0 - 2.0 * f64::from(y) / n)).sinh().atan().to_degrees();
    let (x0, x1, y0, y1) = (x_of(bbox[0]), x_of(bbox[2]), y_of(bbox[3]), y_of(bbox[1]));
    let mut out = Vec::new();
    for x in x0..=x1 {
        for y in y0..=y1 {
            if out.len() == 36 {
                return out;
            }
            let url =
                template.replace("{z}", &z.to_string()).replace("{x}", &x.to_string()).replace("{y}", &y.to_string());
            out.push((url, [lng_of(x), lat_of(y + 1), lng_of(x + 1), lat_of(y)]));
        }
    }
    out
}

/// The map. `focus` are the points it frames (the destination and the courier, say).
#[component]
pub fn MapView(layers: MapLayers, focus: Vec<LatLng>, label: String) -> Element {
    let Some(bbox) = frame(&focus, 0.25) else {
        return rsx! { div { class: "xl-map xl-map-empty", "{label}" } };
    };
    let projection = Projection::new(bbox);
    let height = projection.height;
    let view_box = format!("0 0 {WIDTH} {height:.0}");
    let roads: Vec<(String, &'static str)> =
        layers.roads.iter().map(|(class, line)| (projection.points(line), road_width(class))).collect();
    let trail = projection.points(&layers.trail);
    let route = projection.points(&layers.route);
    let stops: Vec<(f64, f64)> = layers.stops.iter().map(|p| projection.xy(*p)).collect();
    let courier = layers.courier.map(|p| projection.xy(p));
    let destination = layers.destination.map(|p| projection.xy(p));
    let tiles: Vec<(String, f64, f64, f64, f64)> = layers
        .tile_url
        .as_deref()
        .map(|template| {
            tiles(template, bbox)
                .into_iter()
                .map(|(url, [w, s, e, n])| {
                    let (x0, y0) = projection.xy(LatLng { lat: n, lng: w });
                    let (x1, y1) = projection.xy(LatLng { lat: s, lng: e });
                    (url, x0, y0, x1 - x0, y1 - y0)
                })
                .collect()
        })
        .unwrap_or_default();
    rsx! {
        figure { class: "xl-map",
            svg {
                id: "xl-map",
                role: "img",
                "aria-label": "{label}",
                view_box: "{view_box}",
                preserve_aspect_ratio: "xMidYMid meet",
                rect { class: "xl-map-ground", x: "0", y: "0", width: "{WIDTH}", height: "{height:.0}" }
                for (url, x, y, w, h) in tiles {
                    image { class: "xl-map-tile", href: "{url}", x: "{x:.1}", y: "{y:.1}", width: "{w:.1}", height: "{h:.1}", preserve_aspect_ratio: "none" }
                }
                g { class: "xl-map-roads",
                    for (points, width) in roads {
                        polyline { points: "{points}", stroke_width: "{width}" }
                    }
                }
                if !layers.route.is_empty() {
                    polyline { class: "xl-map-route", points: "{route}" }
                }
                if !layers.trail.is_empty() {
                    polyline { class: "xl-map-trail", points: "{trail}" }
                }
                for (x, y) in stops {
                    circle { class: "xl-map-stop", cx: "{x:.1}", cy: "{y:.1}", r: "9" }
                }
                if let Some((x, y)) = destination {
                    g { class: "xl-map-destination", transform: "translate({x:.1},{y:.1})",
                        path { d: "M0,0 L-12,-24 A14,14 0 1,1 12,-24 Z" }
                        circle { cx: "0", cy: "-30", r: "5", fill: "#fff" }
                    }
                }
                if let Some((x, y)) = courier {
                    circle { id: "xl-map-courier", class: "xl-map-courier", cx: "{x:.1}", cy: "{y:.1}", r: "13" }
                }
            }
            if let Some(credit) = layers.attribution {
                figcaption { class: "xl-map-credit", "{credit}" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_holds_every_point_with_a_margin_and_a_minimum_size() {
        let a = LatLng { lat: 39.90, lng: 116.40 };
        let b = LatLng { lat: 39.95, lng: 116.50 };
        let f = frame(&[a, b], 0.25).unwrap_or_default();
        assert!(f[0] < 116.40 && f[2] > 116.50 && f[1] < 39.90 && f[3] > 39.95, "{f:?}");
        let one = frame(&[a], 0.25).unwrap_or_default();
        assert!(one[3] - one[1] >= 0.01 && one[2] - one[0] >= 0.01, "{one:?}");
        assert!(frame(&[], 0.25).is_none());
    }

    #[test]
    fn tiles_cover_the_box_at_a_zoom_that_fits_it() {
        let bbox = [116.40, 39.90, 116.44, 39.93];
        let found = tiles("https://tiles.example/{z}/{x}/{y}.png", bbox);
        assert!(!found.is_empty() && found.len() <= 36, "{}", found.len());
        assert!(found[0].0.starts_with("https://tiles.example/15/"), "{}", found[0].0);
        let west = found.iter().map(|t| t.1[0]).fold(f64::MAX, f64::min);
        let south = found.iter().map(|t| t.1[1]).fold(f64::MAX, f64::min);
        let east = found.iter().map(|t| t.1[2]).fold(f64::MIN, f64::max);
        let north = found.iter().map(|t| t.1[3]).fold(f64::MIN, f64::max);
        assert!(west <= bbox[0] && south <= bbox[1] && east >= bbox[2] && north >= bbox[3]);
    }

    #[test]
    fn north_is_up_and_east_is_right() {
        let p = Projection::new([116.0, 39.0, 117.0, 40.0]);
        let (x1, y1) = p.xy(LatLng { lat: 39.1, lng: 116.1 });
        let (x2, y2) = p.xy(LatLng { lat: 39.9, lng: 116.9 });
        assert!(x2 > x1 && y2 < y1);
        // A degree of longitude is shorter than a degree of latitude here.
        assert!(p.height > WIDTH);
    }
}
