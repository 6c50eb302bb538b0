//! Content-defined chunking parameters and the split of a file's data into objects.

/// FastCDC parameters, recorded in every manifest so later imports chunk alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkParams {
    /// Smallest chunk.
    pub min: u32,
    /// Target average chunk.
    pub avg: u32,
    /// Largest chunk. Files no larger than this are stored whole, as one object.
    pub max: u32,
}

impl Default for ChunkParams {
    fn default() -> ChunkParams {
        ChunkParams::with_average(64 * 1024)
    }
}

impl ChunkParams {
    /// min = avg/4, max = avg*4.
    pub fn with_average(avg: u32) -> ChunkParams {
        ChunkParams { min: avg / 4, avg, max: avg.saturating_mul(4) }
    }

    /// Checks the bounds FastCDC accepts and that min <= avg <= max.
    pub fn validate(&self) -> Result<(), String> {
        if !(64..=1 << 20).contains(&self.min) || !(256..=1 << 22).contains(&self.avg) || !(1024..=1 << 24).contains(&self.max) {
            return Err(format!("chunk sizes {}/{}/{} outside FastCDC's bounds", self.min, self.avg, self.max));
        }
        if !(self.min <= self.avg && self.avg <= self.max) {
            return Err(format!("chunk sizes must satisfy min <= avg <= max, got {}/{}/{}", self.min, self.avg, self.max));
        }
        Ok(())
    }

    /// Splits `data` into chunk lengths. Data no longer than `max` is one chunk.
    pub fn split(&self, data: &[u8]) -> Vec<usize> {
        if data.len() <= self.max as usize {
            return if data.is_empty() { Vec::new() } else { vec![data.len()] };
        }
        fastcdc::v2020::FastCDC::new(data, self.min, self.avg, self.max).map(|c| c.length).collect()
    }
}
