package cache

import "time"

var timeZero time.Time
