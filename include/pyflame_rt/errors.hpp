#pragma once
// The error hierarchy of the API reference. Python sees the same hierarchy.
#include <stdexcept>
#include <string>

namespace pyflame_rt {

class PyFlameRTError : public std::runtime_error {
public:
    explicit PyFlameRTError(const std::string& message) : std::runtime_error(message) {}
};

// A model file that is corrupt, truncated, foreign or internally inconsistent.
class InvalidModelError : public PyFlameRTError {
public:
    explicit InvalidModelError(const std::string& message) : PyFlameRTError(message) {}
};

// An operator with no kernel on the chosen backend (named with domain and opset where known).
class UnsupportedOperatorError : public PyFlameRTError {
public:
    explicit UnsupportedOperatorError(const std::string& op_type)
        : PyFlameRTError("unsupported operator: " + op_type), op_type_(op_type) {}
    UnsupportedOperatorError(const std::string& op_type, const std::string& message)
        : PyFlameRTError(message), op_type_(op_type) {}
    const std::string& op_type() const { return op_type_; }

private:
    std::string op_type_;
};

// Bad input: feeds, shapes, dtypes, options, attributes.
class ValidationError : public PyFlameRTError {
public:
    explicit ValidationError(const std::string& message) : PyFlameRTError(message) {}
};

// A model path that does not exist (Python: FileNotFoundError, also a PyFlameRTError).
class FileNotFoundError : public PyFlameRTError {
public:
    explicit FileNotFoundError(const std::string& path)
        : PyFlameRTError("no such file: " + path), path_(path) {}
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

// RunOptions.timeout_ms exceeded; the session stays usable.
class RunTimeoutError : public PyFlameRTError {
public:
    explicit RunTimeoutError(const std::string& message) : PyFlameRTError(message) {}
};

}  // namespace pyflame_rt
