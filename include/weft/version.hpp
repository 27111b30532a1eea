// SPDX-License-Identifier: MIT
/// @file
/// @brief weft's version.
#pragma once

/// Major version: incompatible API changes.
#define WEFT_VERSION_MAJOR 0
/// Minor version: compatible additions.
#define WEFT_VERSION_MINOR 1
/// Patch version: fixes.
#define WEFT_VERSION_PATCH 0
