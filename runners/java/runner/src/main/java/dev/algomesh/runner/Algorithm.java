package dev.algomesh.runner;

/**
 * An algorithm: {@code load()} runs once per process before any call, {@code apply} once per
 * call, possibly on several threads at once (up to the manifest's {@code scaling.concurrency}).
 *
 * <p>The input is a Jackson {@link com.fasterxml.jackson.databind.JsonNode} for JSON, a
 * {@link String} for text and a {@code byte[]} for binary. Return a {@code String} for text, a
 * {@code byte[]} (or {@link java.nio.ByteBuffer}) for binary, anything else for JSON: a
 * {@code JsonNode}, a {@code Map}, a {@code List}, a number, a boolean, {@code null} or any
 * object Jackson can serialize (return {@code TextNode.valueOf(s)} for a JSON string).
 */
public interface Algorithm {
    /** Runs once per process, before the first call. An exception here is ALGORITHM_LOAD_FAILED. */
    default void load() throws Exception {}

    /** Runs once per call. An exception here is ALGORITHM_ERROR with its message and stack trace. */
    Object apply(Call call, Object input) throws Exception;
}
