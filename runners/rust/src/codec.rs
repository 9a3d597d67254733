//! tonic's prost codec, except that a body that does not decode is INVALID_INPUT (with
//! algomesh's ErrorInfo), as in the Python and Go runners, rather than a bare INTERNAL.
//! The generated code (src/gen) names it through tonic-prost-build's codec_path.

use std::collections::HashMap;
use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstDecoder, ProstEncoder};

pub struct AlgomeshCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for AlgomeshCodec<T, U> {
    fn default() -> Self {
        AlgomeshCodec(PhantomData)
    }
}

impl<T, U> Codec for AlgomeshCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = AlgomeshDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        AlgomeshDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

pub struct AlgomeshDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for AlgomeshDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|e| {
            let message = format!("the message is not a valid {}: {}", std::any::type_name::<U>().rsplit("::").next().unwrap_or("message"), e.message());
            crate::error::status("INVALID_INPUT", &message, "", HashMap::new())
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
