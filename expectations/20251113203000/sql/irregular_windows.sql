-- Windows that are not finite, non-empty and half-open '[)', as the application writes them.
SELECT id, "window"
  FROM {batch}
 WHERE isempty("window") OR lower_inf("window") OR upper_inf("window")
    OR NOT lower_inc("window") OR upper_inc("window")
