//! A deterministic generator of realistic FHIR R4 resources.
//!
//! Produces patients with their encounters, observations, conditions,
//! procedures, immunizations, medication requests and diagnostic reports,
//! shaped like Synthea's output (codings with system/code/display,
//! references, periods, quantities, narrative-free), in the same mix of
//! sizes: a few hundred bytes to a few KiB. The same seed always gives the
//! same bytes, so tests can regenerate what they expect. No real person's
//! data is involved.

use serde_json::{Value, json};

/// A small, fast, seeded pseudo-random generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A random UUID-shaped id (version 4 layout).
    pub fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

const FAMILY: &[&str] = &[
    "Lemke",
    "Wintheiser",
    "Walsh",
    "Yundt",
    "Kuphal",
    "Bergstrom",
    "Smitham",
    "Monahan",
    "Streich",
    "Macejkovic",
    "Block",
    "Pfeffer",
    "Hegmann",
    "Wuckert",
    "Little",
    "Medhurst",
];
const GIVEN: &[&str] = &[
    "Abram",
    "Aleta",
    "Alyce",
    "Arturo",
    "Ashanti",
    "Ben",
    "Bernie",
    "Bibi",
    "Carmelo",
    "Catheryn",
    "Chad",
    "Cheryll",
    "Chet",
    "Chiquita",
    "Christinia",
    "Claudia",
];
const CITY: &[&str] = &[
    "Boston",
    "Worcester",
    "Springfield",
    "Lowell",
    "Cambridge",
    "Quincy",
];
const VITALS: &[(&str, &str, &str, f64, f64)] = &[
    ("8302-2", "Body Height", "cm", 150.0, 195.0),
    ("29463-7", "Body Weight", "kg", 45.0, 120.0),
    ("39156-5", "Body Mass Index", "kg/m2", 17.0, 38.0),
    ("8867-4", "Heart rate", "/min", 50.0, 110.0),
    ("9279-1", "Respiratory rate", "/min", 11.0, 22.0),
    ("2339-0", "Glucose", "mg/dL", 65.0, 140.0),
    ("2093-3", "Total Cholesterol", "mg/dL", 140.0, 260.0),
];
const CONDITIONS: &[(&str, &str)] = &[
    ("44054006", "Diabetes"),
    ("38341003", "Hypertension"),
    ("195662009", "Acute viral pharyngitis (disorder)"),
    ("10509002", "Acute bronchitis (disorder)"),
    ("15777000", "Prediabetes"),
    ("40055000", "Chronic sinusitis (disorder)"),
];
const VACCINES: &[(&str, &str)] = &[
    ("140", "Influenza, seasonal, injectable, preservative free"),
    ("113", "Td (adult) preservative free"),
    ("133", "Pneumococcal conjugate PCV 13"),
];
const MEDS: &[(&str, &str)] = &[
    ("314076", "lisinopril 10 MG Oral Tablet"),
    (
        "860975",
        "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet",
    ),
    ("313782", "Acetaminophen 325 MG Oral Tablet"),
];

fn date(rng: &mut Rng, from_year: u64, span_years: u64) -> String {
    format!(
        "{}-{:02}-{:02}",
        from_year + rng.below(span_years),
        1 + rng.below(12),
        1 + rng.below(28)
    )
}

fn instant(rng: &mut Rng) -> String {
    format!(
        "{}T{:02}:{:02}:{:02}-05:00",
        date(rng, 2010, 14),
        rng.below(24),
        rng.below(60),
        rng.below(60)
    )
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}], "text": display})
}

/// A Patient resource with the given id.
pub fn patient(rng: &mut Rng, id: &str) -> Value {
    let family = *rng.pick(FAMILY);
    let given = *rng.pick(GIVEN);
    json!({
        "resourceType": "Patient",
        "id": id,
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
        "extension": [{
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
            "valueCode": if rng.below(2) == 0 { "F" } else { "M" }
        }],
        "identifier": [
            {"system": "https://github.com/synthetichealth/synthea", "value": rng.uuid()},
            {"type": coding("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical Record Number"),
             "system": "http://hospital.smarthealthit.org", "value": rng.uuid()},
            {"type": coding("http://terminology.hl7.org/CodeSystem/v2-0203", "SS", "Social Security Number"),
             "system": "http://hl7.org/fhir/sid/us-ssn", "value": format!("999-{:02}-{:04}", rng.below(100), rng.below(10_000))}
        ],
        "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Ms."]}],
        "telecom": [{"system": "phone", "value": format!("555-{:03}-{:04}", rng.below(1000), rng.below(10_000)), "use": "home"}],
        "gender": if rng.below(2) == 0 { "female" } else { "male" },
        "birthDate": date(rng, 1930, 80),
        "address": [{
            "line": [format!("{} {} Street", rng.below(999), rng.pick(FAMILY))],
            "city": rng.pick(CITY), "state": "MA", "postalCode": format!("0{:04}", rng.below(10_000)), "country": "US"
        }],
        "maritalStatus": coding("http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "M", "Married"),
        "communication": [{"language": coding("urn:ietf:bcp:47", "en-US", "English")}]
    })
}

/// A clinical resource of a random kind about `patient_ref` (e.g. `Patient/123`).
pub fn clinical(rng: &mut Rng, id: &str, patient_ref: &str, encounter_ref: &str) -> Value {
    match rng.below(10) {
        0..=4 => {
            let (code, display, unit, lo, hi) = *rng.pick(VITALS);
            let value = lo + (hi - lo) * (rng.below(1000) as f64 / 1000.0);
            json!({
                "resourceType": "Observation", "id": id, "status": "final",
                "category": [coding("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs", "vital-signs")],
                "code": coding("http://loinc.org", code, display),
                "subject": {"reference": patient_ref}, "encounter": {"reference": encounter_ref},
                "effectiveDateTime": instant(rng), "issued": instant(rng),
                "valueQuantity": {"value": (value * 10.0).round() / 10.0, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
            })
        }
        5 => {
            let (code, display) = *rng.pick(CONDITIONS);
            json!({
                "resourceType": "Condition", "id": id,
                "clinicalStatus": coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "active"),
                "verificationStatus": coding("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "confirmed"),
                "code": coding("http://snomed.info/sct", code, display),
                "subject": {"reference": patient_ref}, "encounter": {"reference": encounter_ref},
                "onsetDateTime": instant(rng), "recordedDate": instant(rng)
            })
        }
        6 => {
            let (code, display) = *rng.pick(VACCINES);
            json!({
                "resourceType": "Immunization", "id": id, "status": "completed",
                "vaccineCode": coding("http://hl7.org/fhir/sid/cvx", code, display),
                "patient": {"reference": patient_ref}, "encounter": {"reference": encounter_ref},
                "occurrenceDateTime": instant(rng), "primarySource": true
            })
        }
        7 => {
            let (code, display) = *rng.pick(MEDS);
            json!({
                "resourceType": "MedicationRequest", "id": id, "status": "active", "intent": "order",
                "medicationCodeableConcept": coding("http://www.nlm.nih.gov/research/umls/rxnorm", code, display),
                "subject": {"reference": patient_ref}, "encounter": {"reference": encounter_ref},
                "authoredOn": instant(rng),
                "requester": {"reference": "Practitioner/0000016f-57cb-cdaa-0000-0000000000de", "display": "Dr. Lee"},
                "dosageInstruction": [{"sequence": 1, "asNeededBoolean": false,
                    "timing": {"repeat": {"frequency": 1, "period": 1.0, "periodUnit": "d"}}}]
            })
        }
        8 => json!({
            "resourceType": "Procedure", "id": id, "status": "completed",
            "code": coding("http://snomed.info/sct", "430193006", "Medication Reconciliation (procedure)"),
            "subject": {"reference": patient_ref}, "encounter": {"reference": encounter_ref},
            "performedPeriod": {"start": instant(rng), "end": instant(rng)}
        }),
        _ => json!({
            "resourceType": "DiagnosticReport", "id": id, "status": "final",
            "category": [coding("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB", "Laboratory")],
            "code": coding("http://loinc.org", "51990-0", "Basic Metabolic Panel"),
            "subject": {"reference": patient_ref}, "encounter": {"reference": encounter_ref},
            "effectiveDateTime": instant(rng), "issued": instant(rng),
            "result": (0..(2 + rng.below(6))).map(|_| json!({"reference": format!("Observation/{}", rng.uuid()), "display": "Glucose"})).collect::<Vec<_>>()
        }),
    }
}

/// An Encounter about `patient_ref`.
pub fn encounter(rng: &mut Rng, id: &str, patient_ref: &str) -> Value {
    json!({
        "resourceType": "Encounter", "id": id, "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [coding("http://snomed.info/sct", "185345009", "Encounter for symptom")],
        "subject": {"reference": patient_ref},
        "participant": [{"individual": {"reference": "Practitioner/0000016f-57cb-cdaa-0000-0000000000de", "display": "Dr. Lee"}}],
        "period": {"start": instant(rng), "end": instant(rng)},
        "serviceProvider": {"reference": "Organization/ef58ea08-d883-3957-8300-150554edc8fb", "display": "GOOD SAMARITAN MEDICAL CENTER"}
    })
}

/// One patient's record: the patient, then `n` encounters and clinical
/// resources, as `(type, id, JSON bytes)`. Deterministic in `rng`.
pub fn patient_record(rng: &mut Rng, n: usize) -> Vec<(String, String, Vec<u8>)> {
    let pid = rng.uuid();
    let pref = format!("Patient/{pid}");
    let mut out = Vec::with_capacity(n + 1);
    let push = |out: &mut Vec<(String, String, Vec<u8>)>, v: Value| {
        let ty = v["resourceType"].as_str().unwrap_or("Basic").to_owned();
        let id = v["id"].as_str().unwrap_or("").to_owned();
        out.push((ty, id, serde_json::to_vec(&v).unwrap_or_default()));
    };
    push(&mut out, patient(rng, &pid));
    let mut eref = String::new();
    for i in 0..n {
        let id = rng.uuid();
        if i % 8 == 0 {
            eref = format!("Encounter/{id}");
            push(&mut out, encounter(rng, &id, &pref));
        } else {
            push(&mut out, clinical(rng, &id, &pref, &eref));
        }
    }
    out
}

/// A transaction Bundle for one patient, shaped like Synthea's: every
/// entry a `POST` whose `fullUrl` is a `urn:uuid:` and whose resource has
/// no id, with references between entries written as those `urn:uuid:`s.
pub fn transaction_bundle(rng: &mut Rng, n: usize) -> Value {
    let record = patient_record(rng, n);
    let ids: std::collections::HashSet<String> =
        record.iter().map(|(_, id, _)| id.clone()).collect();
    let entries: Vec<Value> = record
        .into_iter()
        .map(|(ty, id, body)| {
            let mut v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.shift_remove("id");
            }
            to_urn(&mut v, &ids);
            json!({"fullUrl": format!("urn:uuid:{id}"), "resource": v, "request": {"method": "POST", "url": ty}})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// Rewrites `Type/id` references to ids in `ids` as `urn:uuid:id`.
fn to_urn(v: &mut Value, ids: &std::collections::HashSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("reference")
                && let Some((_, id)) = r.split_once('/')
                && ids.contains(id)
            {
                *r = format!("urn:uuid:{id}");
            }
            m.values_mut().for_each(|x| to_urn(x, ids));
        }
        Value::Array(items) => items.iter_mut().for_each(|x| to_urn(x, ids)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let a = patient_record(&mut Rng::new(7), 40);
        let b = patient_record(&mut Rng::new(7), 40);
        assert_eq!(a, b);
        assert_ne!(a, patient_record(&mut Rng::new(8), 40));
    }

    #[test]
    fn resources_are_json_with_type_and_id_and_realistic_sizes() {
        let rec = patient_record(&mut Rng::new(1), 200);
        assert_eq!(rec.len(), 201);
        assert_eq!(rec[0].0, "Patient");
        let mut total = 0;
        for (ty, id, body) in &rec {
            let v: Value = serde_json::from_slice(body).expect("valid JSON");
            assert_eq!(v["resourceType"], ty.as_str());
            assert_eq!(v["id"], id.as_str());
            assert!(
                body.len() > 200 && body.len() < 8_000,
                "{ty}: {} bytes",
                body.len()
            );
            total += body.len();
        }
        let mean = total / rec.len();
        assert!((400..3000).contains(&mean), "mean {mean} bytes");
    }
}
