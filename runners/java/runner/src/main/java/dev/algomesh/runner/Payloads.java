package dev.algomesh.runner;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.google.protobuf.ByteString;
import dev.algomesh.v1.ContentType;
import dev.algomesh.v1.Payload;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;

/** Java values to and from payloads: String is text, byte[] binary, everything else JSON. */
public final class Payloads {
    /** The mapper the runner reads and writes JSON with (numbers keep their exact text). */
    public static final ObjectMapper MAPPER = JsonMapper.builder(JsonFactory.builder()
                    .streamReadConstraints(StreamReadConstraints.builder()
                            .maxStringLength(Integer.MAX_VALUE).build())
                    .build())
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS)
            .nodeFactory(JsonNodeFactory.withExactBigDecimals(true))
            .build();

    private Payloads() {}

    /** Thrown for a payload that cannot be read (INVALID_INPUT). */
    static final class InvalidPayload extends Exception {
        private static final long serialVersionUID = 1L;

        InvalidPayload(String message) {
            super(message);
        }
    }

    static Object decode(Payload payload) throws InvalidPayload {
        ContentType ct = payload.getContentType();
        if (ct == ContentType.CONTENT_TYPE_BINARY) {
            return payload.getData().toByteArray();
        }
        String name = ct == ContentType.CONTENT_TYPE_JSON ? "json" : ct == ContentType.CONTENT_TYPE_TEXT ? "text"
                : "unspecified";
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(payload.getData().asReadOnlyByteBuffer()).toString();
        } catch (CharacterCodingException e) {
            throw new InvalidPayload(name + " payload is not UTF-8: " + e);
        }
        if (ct == ContentType.CONTENT_TYPE_TEXT) {
            return text;
        }
        if (ct == ContentType.CONTENT_TYPE_JSON) {
            try {
                JsonNode node = MAPPER.readTree(text);
                if (node == null || node.isMissingNode()) {
                    throw new InvalidPayload("payload declared JSON is empty");
                }
                return node;
            } catch (JsonProcessingException e) {
                throw new InvalidPayload("payload declared JSON is not valid JSON: " + e.getOriginalMessage());
            }
        }
        throw new InvalidPayload("unsupported content type " + payload.getContentTypeValue());
    }

    /** @throws IllegalArgumentException for a value Jackson cannot write as JSON */
    static Payload encode(Object value) {
        if (value instanceof String s) {
            return Payload.newBuilder().setContentType(ContentType.CONTENT_TYPE_TEXT)
                    .setData(ByteString.copyFromUtf8(s)).build();
        }
        if (value instanceof byte[] b) {
            return Payload.newBuilder().setContentType(ContentType.CONTENT_TYPE_BINARY)
                    .setData(ByteString.copyFrom(b)).build();
        }
        if (value instanceof ByteBuffer b) {
            return Payload.newBuilder().setContentType(ContentType.CONTENT_TYPE_BINARY)
                    .setData(ByteString.copyFrom(b.duplicate())).build();
        }
        if (value instanceof ByteString b) {
            return Payload.newBuilder().setContentType(ContentType.CONTENT_TYPE_BINARY).setData(b).build();
        }
        try {
            return Payload.newBuilder().setContentType(ContentType.CONTENT_TYPE_JSON)
                    .setData(ByteString.copyFrom(MAPPER.writeValueAsBytes(value))).build();
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException("cannot encode " + (value == null ? "null" : value.getClass().getName())
                    + " as JSON: " + e.getOriginalMessage(), e);
        }
    }
}
